/**
 * Model files on disk: reading one (its JSON and, for word input, the table file beside it) and
 * writing one. The model itself, its checks and its hash are the pure core's (core/model.ts).
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { ModelFileError } from '../core/errors.js';
import { parseModel, withWordTable, type ModelFile, type RnnModel } from '../core/model.js';
import { describeJsonError } from '../core/validation.js';

/**
 * Reads and validates a model file; every failure is a `ModelFileError` naming the file. With
 * `sha256` (a models-topic record's), the bytes read must have that hash: checked on the bytes
 * parsed, so a file replaced between a check and the read cannot slip through.
 */
export function loadModelFile(path: string, expect: { readonly sha256?: string } = {}): RnnModel {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new ModelFileError(path, [`cannot read the file: ${(err as Error).message}`]);
  }
  if (expect.sha256 !== undefined) {
    const actual = createHash('sha256').update(bytes).digest('hex');
    if (actual !== expect.sha256.toLowerCase()) throw new ModelFileError(path, [`its sha256 is ${actual}, expected ${expect.sha256}`]);
  }
  const text = bytes.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ModelFileError(path, [`not valid JSON: ${describeJsonError(text, err)}`]);
  }
  const tables = new Map<string, Uint8Array>();
  const file = (json as { input?: { table?: { file?: unknown } } } | null)?.input?.table?.file;
  if (typeof file === 'string') {
    // Only a name beside the model: a model file cannot make rnnstream read elsewhere.
    if (basename(file) !== file) throw new ModelFileError(path, [`input.table.file: expected a file name beside the model, got a path ("${file}")`]);
    try {
      tables.set(file, readFileSync(join(dirname(path), file)));
    } catch {
      // parseModel names the missing file.
    }
  }
  return parseModel(json, path, tables);
}

/**
 * Writes a model file; with word input, its table goes to `<name>.words.f32` beside it, and the
 * JSON names that file and its sha256. The table is float32 little-endian, row-major.
 */
export function writeModelFile(path: string, doc: ModelFile, table?: Float32Array): void {
  if (!doc.input) {
    writeFileSync(path, JSON.stringify(doc) + '\n');
    return;
  }
  if (!table) throw new ModelFileError(path, ['input: a model with word input needs its table to be written']);
  const named = withWordTable(doc, `${basename(path).replace(/\.json$/, '')}.words.f32`, table);
  writeFileSync(join(dirname(path), named.doc.input!.table.file), named.bytes);
  writeFileSync(path, JSON.stringify(named.doc) + '\n');
}

