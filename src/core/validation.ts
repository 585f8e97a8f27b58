/**
 * One place that turns zod issues into the messages users read: the dotted path of the field,
 * then what was expected, e.g. `layers[0].hiddenSize: Too small: expected number to be >0`.
 */
import type { z } from 'zod';

export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/**
 * A flag's or an environment variable's text as a number, strictly: decimal digits (with a sign, a point or an exponent where
 * `decimal`), nothing else. `Number()` alone takes '' and ' ' for 0 and '0x1f' for 31, so
 * `--http-port ''` was port 0 (a random port).
 */
export function parseNumberText(value: string, decimal: boolean): number {
  const pattern = decimal ? /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/ : /^[+-]?\d+$/;
  return pattern.test(value.trim()) ? Number(value) : Number.NaN;
}

export function formatZodIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${formatPath(issue.path) || '(root)'}: ${issue.message}`);
}

/**
 * The UTF-8 length of `text` when it is more than `limit` bytes, else undefined. A string of at
 * most `limit / 3` UTF-16 units cannot be (3 bytes per unit at most), and is not counted: only
 * long strings pay for the count.
 */
export function utf8LengthOver(text: string, limit: number): number | undefined {
  if (text.length * 3 <= limit) return undefined;
  const bytes = Buffer.byteLength(text);
  return bytes > limit ? bytes : undefined;
}

/** Whether `prefix` could still begin valid JSON: it parses, or fails only for running out. */
function viablePrefix(prefix: string): boolean {
  try {
    JSON.parse(prefix);
    return true;
  } catch (err) {
    const m = (err as Error).message;
    if (m.startsWith('Unexpected end of JSON input')) return true;
    const at = /in JSON at position (\d+)/.exec(m);
    return at !== null && Number(at[1]) >= prefix.length;
  }
}

/** 1-based line and column of `offset` in `text`. */
function lineAndColumn(text: string, offset: number): { line: number; column: number } {
  let line = 1;
  let start = 0;
  for (let i = text.indexOf('\n'); i !== -1 && i < offset; i = text.indexOf('\n', i + 1)) {
    line++;
    start = i + 1;
  }
  return { line, column: offset - start + 1 };
}

/**
 * Why `text` is not JSON, as "line L, column C: what was expected", never quoting the text: a
 * secret (a password file passed as --config by mistake) must not reach a terminal or a log.
 * V8's own messages either say where ("... in JSON at position N") or quote the text
 * ("Unexpected token 'P', "PW-S3cr..." is not valid JSON"); for the second kind the position is
 * found by bisecting for the longest prefix that could still be JSON.
 */
export function describeJsonError(text: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const at = /^(.*?) in JSON at position (\d+)/.exec(message);
  let offset: number;
  let what: string;
  if (at) {
    offset = Number(at[2]);
    what = at[1]!;
  } else if (message.startsWith('Unexpected end of JSON input')) {
    offset = text.length;
    what = text.trim() === '' ? 'the file is empty' : 'unexpected end of input';
  } else {
    // The first offset past the longest viable prefix is the character V8 did not expect.
    let lo = 0;
    let hi = text.length;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (viablePrefix(text.slice(0, mid))) lo = mid;
      else hi = mid - 1;
    }
    offset = lo;
    what = 'unexpected character';
  }
  const { line, column } = lineAndColumn(text, offset);
  return `line ${line}, column ${column}: ${what}`;
}
