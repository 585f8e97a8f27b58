/**
 * One place that turns zod issues into the messages users read: the dotted path of the field,
 * then what was expected, e.g. `layers[0].hiddenSize: Too small: expected number to be >0`.
 */
import type { z } from 'zod';

export function formatPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

export function formatZodIssues(error: z.ZodError): string[] {
  return error.issues.map((issue) => `${formatPath(issue.path) || '(root)'}: ${issue.message}`);
}
