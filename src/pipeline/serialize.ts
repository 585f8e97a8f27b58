/**
 * The JSON of pipeline outputs, one writer for every mode: replay's --out and --dead-letters
 * lines and the Kafka service's output and dead-letter records are the same text, so a reader
 * and the equality tests see one format.
 */
import { isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { describePosition, type DeadLetter, type SourcePosition } from '../operators/records.js';
import { utf8Bytes, type ByteWriter } from './json-bytes.js';
import type { PredictionRecord } from './predict.js';

/** A source position as JSON: "file:line" for fixtures, {topic, partition, offset} for Kafka (a reader drops duplicates by it). */
export function sourceJson(p: SourcePosition): string {
  return p.kind === 'kafka' ? `{"topic":${JSON.stringify(p.topic)},"partition":${p.partition},"offset":${JSON.stringify(p.offset)}}` : JSON.stringify(describePosition(p));
}

/** float32 outputs with 7 significant digits: all a float32 holds, and stable across modes. */
export function formatFloat32(v: number): string {
  // Probabilities are in [0, 1]: 7 decimals (7 significant digits or fewer), written from the
  // integer v * 1e7, because number-to-string of a fraction (shortest round trip) is the slow part
  // of a prediction's JSON; other values take the general path.
  if (v >= 0 && v <= 1) {
    const n = Math.round(v * 1e7);
    if (n === 0) return '0';
    if (n === 1e7) return '1';
    const digits = String(n);
    let end = digits.length;
    while (digits.charCodeAt(end - 1) === 48) end--; // trailing zeros
    return '0.' + ZEROS[7 - digits.length]! + (end === digits.length ? digits : digits.slice(0, end));
  }
  return String(Number(v.toPrecision(7)));
}

const ZEROS = ['', '0', '00', '000', '0000', '00000', '000000'];

/** `"label":` for each output name, made once per names array (the model's). */
const fieldPrefixes = new WeakMap<readonly string[], string[]>();
function prefixesOf(names: readonly string[]): string[] {
  let p = fieldPrefixes.get(names);
  if (!p) fieldPrefixes.set(names, (p = names.map((n, k) => `${k === 0 ? '' : ','}${JSON.stringify(n)}:`)));
  return p;
}

/**
 * Hex digits of the model's content hash a prediction carries (`"model"`): 64 bits name a model
 * among any number a service will serve; the whole hash is in /metrics and /keys.
 */
export const MODEL_HASH_DIGITS = 16;

/** `,"model":"<16 hex>"` as UTF-8, per hash: a service serves one or a few. */
const modelFragments = new Map<string, Uint8Array>();
function modelFragmentOf(hash: string): Uint8Array {
  let f = modelFragments.get(hash);
  if (!f) modelFragments.set(hash, (f = utf8Bytes(`,"model":${JSON.stringify(hash.slice(0, MODEL_HASH_DIGITS))}`)));
  return f;
}

/** One prediction as JSON. Written by hand because it runs once per event. */
export function predictionJson(p: PredictionRecord): string {
  const model = (p.model === undefined ? '' : `,"model":${JSON.stringify(p.model.slice(0, MODEL_HASH_DIGITS))}`) + (p.warm === false ? ',"warm":false' : '');
  if (p.head === 'ctc') {
    const label = p.label === undefined ? '' : `,"label":${JSON.stringify(p.label)}`;
    return `{"key":${JSON.stringify(p.key)},"seq":${p.seq}${model},"prediction":${JSON.stringify(p.prediction)},"final":${p.final === true}${label},"source":${sourceJson(p.source)}}`;
  }
  let fields = '';
  if (p.top) {
    p.top.forEach((k, i) => (fields += `${i === 0 ? '' : ','}${JSON.stringify(p.names[k])}:${formatFloat32(p.output[k]!)}`));
  } else {
    const prefixes = prefixesOf(p.names);
    for (let k = 0; k < prefixes.length; k++) fields += prefixes[k]! + formatFloat32(p.output[k]!);
  }
  const prediction = typeof p.prediction === 'string' ? JSON.stringify(p.prediction) : formatFloat32(p.prediction);
  const topClass = p.topClass === undefined ? '' : `,"topClass":${JSON.stringify(p.topClass)}`;
  const label = p.label === undefined ? '' : `,"label":${JSON.stringify(p.label)}`;
  return `{"key":${JSON.stringify(p.key)},"seq":${p.seq}${model},"prediction":${prediction}${topClass},"${p.head === 'softmax' ? 'probabilities' : 'values'}":{${fields}}${label},"source":${sourceJson(p.source)}}`;
}

/** The constant parts of a prediction's JSON as bytes, made once per names array (the model's). */
interface PredictionFragments {
  readonly fields: Uint8Array[];
  readonly probabilities: Uint8Array;
  readonly values: Uint8Array;
}
const fragmentsByNames = new WeakMap<readonly string[], PredictionFragments>();
function fragmentsOf(names: readonly string[]): PredictionFragments {
  let f = fragmentsByNames.get(names);
  if (!f) {
    f = { fields: prefixesOf(names).map(utf8Bytes), probabilities: utf8Bytes(',"probabilities":{'), values: utf8Bytes(',"values":{') };
    fragmentsByNames.set(names, f);
  }
  return f;
}
const KEY = utf8Bytes('{"key":');
const SEQ = utf8Bytes(',"seq":');
const PREDICTION = utf8Bytes(',"prediction":');
const TOP_CLASS = utf8Bytes(',"topClass":');
const LABEL = utf8Bytes('},"label":');
const SOURCE_AFTER_LABEL = utf8Bytes(',"source":');
const SOURCE = utf8Bytes('},"source":');
const TOPIC = utf8Bytes('{"topic":');
const PARTITION = utf8Bytes(',"partition":');
const OFFSET = utf8Bytes(',"offset":');
const CLOSE = utf8Bytes('}');
const COMMA = utf8Bytes(',');
const COLON = utf8Bytes(':');
const CLOSE2 = utf8Bytes('}}');
const FINAL_TRUE = utf8Bytes(',"final":true');
const WARM_FALSE = utf8Bytes(',"warm":false');
const FINAL_FALSE = utf8Bytes(',"final":false');
const LABEL_AFTER_FINAL = utf8Bytes(',"label":');

/**
 * `predictionJson(p)` written as UTF-8 straight into `w`, byte for byte the same text (see
 * json-bytes.ts for why; test/serialize.test.ts holds the two together).
 */
export function writePredictionJson(p: PredictionRecord, w: ByteWriter): void {
  const f = fragmentsOf(p.names);
  w.bytes(KEY);
  w.jsonString(p.key);
  w.bytes(SEQ);
  w.uint(p.seq);
  if (p.model !== undefined) w.bytes(modelFragmentOf(p.model));
  if (p.warm === false) w.bytes(WARM_FALSE);
  w.bytes(PREDICTION);
  if (typeof p.prediction === 'string') w.jsonString(p.prediction);
  else w.float32(p.prediction);
  if (p.head === 'ctc') {
    // A transcript: whether it is final, instead of a probability per class.
    w.bytes(p.final === true ? FINAL_TRUE : FINAL_FALSE);
    if (p.label === undefined) w.bytes(SOURCE_AFTER_LABEL);
    else {
      w.bytes(LABEL_AFTER_FINAL);
      w.jsonString(p.label);
      w.bytes(SOURCE_AFTER_LABEL);
    }
    writeSource(p.source, w);
    return;
  }
  if (p.topClass !== undefined) {
    w.bytes(TOP_CLASS);
    w.jsonString(p.topClass);
  }
  w.bytes(p.head === 'softmax' ? f.probabilities : f.values);
  if (p.top) {
    // Top k, most probable first: only the first field goes without its comma.
    p.top.forEach((k, i) => {
      if (i > 0) w.bytes(COMMA);
      w.jsonString(p.names[k]!);
      w.bytes(COLON);
      w.float32(p.output[k]!);
    });
  } else {
    for (let k = 0; k < f.fields.length; k++) {
      w.bytes(f.fields[k]!);
      w.float32(p.output[k]!);
    }
  }
  if (p.label === undefined) w.bytes(SOURCE);
  else {
    w.bytes(LABEL);
    w.jsonString(p.label);
    w.bytes(SOURCE_AFTER_LABEL);
  }
  writeSource(p.source, w);
}

/** A prediction's source position, and the prediction's closing brace. */
function writeSource(s: PredictionRecord['source'], w: ByteWriter): void {
  if (s.kind === 'kafka') {
    w.bytes(TOPIC);
    w.jsonString(s.topic);
    w.bytes(PARTITION);
    w.uint(s.partition);
    w.bytes(OFFSET);
    w.jsonString(s.offset);
    w.bytes(CLOSE2);
  } else if (s.kind === 'file') {
    // "file:line", the file's part made once per file: a replay writes one per event.
    w.bytes(filePrefixOf(s.file));
    w.uint(s.line);
    w.bytes(QUOTE_CLOSE);
  } else {
    w.jsonString(describePosition(s));
    w.bytes(CLOSE);
  }
}

const QUOTE_CLOSE = utf8Bytes('"}');
/** `"file:` as UTF-8 JSON (the opening quote, the escaped name, the colon), per file name. */
const filePrefixes = new Map<string, Uint8Array>();
function filePrefixOf(file: string): Uint8Array {
  let prefix = filePrefixes.get(file);
  if (!prefix) filePrefixes.set(file, (prefix = utf8Bytes(JSON.stringify(`${file}:`).slice(0, -1))));
  return prefix;
}

/** Bytes of the original input a dead letter keeps by default (the rest is named by size and hash). */
export const DEAD_LETTER_RAW_BYTES = 64 * 1024;
/** Longest reason a dead letter carries (reasons are ours, but quote the input's field names). */
const MAX_REASON_CHARS = 1000;

export interface DeadLetterLimits {
  /** Most bytes of the original input kept (default DEAD_LETTER_RAW_BYTES). */
  readonly maxRawBytes?: number;
  /** Most bytes of the whole dead letter's JSON (e.g. below the topic's max.message.bytes). */
  readonly maxBytes?: number;
}

/** The longest prefix of valid UTF-8 `bytes` with at most `n` bytes that ends on a character boundary. */
function utf8Prefix(bytes: Buffer, n: number): Buffer {
  if (bytes.length <= n) return bytes;
  let end = n;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

/**
 * A dead letter as JSON: the reason, the source, the original input's size and SHA-256, and the
 * input itself, or its first `maxRawBytes`, as `raw` text, or `rawBase64` when it is not UTF-8
 * (`rawTruncated: true` when cut). Bounded: escaping can make `raw` up to 6 times its bytes
 * (`\u0001`), so a dead letter of a 1 MiB input would otherwise be several MiB, past what a
 * broker accepts in one record. Past `maxBytes` the kept prefix shrinks, to none at all.
 */
export function deadLetterJson(d: DeadLetter, limits: DeadLetterLimits = {}): string {
  const bytes = typeof d.raw === 'string' ? Buffer.from(d.raw, 'utf8') : Buffer.from(d.raw.buffer, d.raw.byteOffset, d.raw.byteLength);
  const reason = d.reason.length > MAX_REASON_CHARS ? `${d.reason.slice(0, MAX_REASON_CHARS)}…` : d.reason;
  const base = `{"reason":${JSON.stringify(reason)},"source":${sourceJson(d.source)},"rawBytes":${bytes.length},"rawSha256":"${createHash('sha256').update(bytes).digest('hex')}"`;
  const asText = typeof d.raw === 'string' || isUtf8(bytes);
  const withPrefix = (n: number): string => {
    const kept = asText ? utf8Prefix(bytes, n) : bytes.subarray(0, n);
    const field = asText ? `"raw":${JSON.stringify(kept.toString('utf8'))}` : `"rawBase64":"${kept.toString('base64')}"`;
    return `${base},${field}${kept.length < bytes.length ? ',"rawTruncated":true' : ''}}`;
  };
  const maxBytes = limits.maxBytes ?? Infinity;
  for (let n = Math.min(limits.maxRawBytes ?? DEAD_LETTER_RAW_BYTES, bytes.length); n >= 1; n = Math.floor(n / 2)) {
    const json = withPrefix(n);
    if (Buffer.byteLength(json) <= maxBytes) return json;
  }
  return `${base}${bytes.length > 0 ? ',"rawTruncated":true' : ',"raw":""'}}`;
}
