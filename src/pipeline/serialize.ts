/**
 * The JSON of pipeline outputs, one writer for every mode: replay's --out and --dead-letters
 * lines and the Kafka service's output and dead-letter records are the same text, so a reader
 * and the equality tests see one format.
 */
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

/** One prediction as JSON. Written by hand because it runs once per event. */
export function predictionJson(p: PredictionRecord): string {
  const prefixes = prefixesOf(p.names);
  let fields = '';
  for (let k = 0; k < prefixes.length; k++) fields += prefixes[k]! + formatFloat32(p.output[k]!);
  const prediction = typeof p.prediction === 'string' ? JSON.stringify(p.prediction) : formatFloat32(p.prediction);
  const label = p.label === undefined ? '' : `,"label":${JSON.stringify(p.label)}`;
  return `{"key":${JSON.stringify(p.key)},"seq":${p.seq},"prediction":${prediction},"${p.head === 'softmax' ? 'probabilities' : 'values'}":{${fields}}${label},"source":${sourceJson(p.source)}}`;
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
const LABEL = utf8Bytes('},"label":');
const SOURCE_AFTER_LABEL = utf8Bytes(',"source":');
const SOURCE = utf8Bytes('},"source":');
const TOPIC = utf8Bytes('{"topic":');
const PARTITION = utf8Bytes(',"partition":');
const OFFSET = utf8Bytes(',"offset":');
const CLOSE = utf8Bytes('}');
const CLOSE2 = utf8Bytes('}}');

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
  w.bytes(PREDICTION);
  if (typeof p.prediction === 'string') w.jsonString(p.prediction);
  else w.float32(p.prediction);
  w.bytes(p.head === 'softmax' ? f.probabilities : f.values);
  for (let k = 0; k < f.fields.length; k++) {
    w.bytes(f.fields[k]!);
    w.float32(p.output[k]!);
  }
  if (p.label === undefined) w.bytes(SOURCE);
  else {
    w.bytes(LABEL);
    w.jsonString(p.label);
    w.bytes(SOURCE_AFTER_LABEL);
  }
  const s = p.source;
  if (s.kind === 'kafka') {
    w.bytes(TOPIC);
    w.jsonString(s.topic);
    w.bytes(PARTITION);
    w.uint(s.partition);
    w.bytes(OFFSET);
    w.jsonString(s.offset);
    w.bytes(CLOSE2);
  } else {
    w.jsonString(describePosition(s));
    w.bytes(CLOSE);
  }
}

/** A dead letter as JSON: the reason, the source, and the original input as `raw` text, or `rawBase64` when it is not UTF-8. */
export function deadLetterJson(d: DeadLetter): string {
  const base = `{"reason":${JSON.stringify(d.reason)},"source":${sourceJson(d.source)}`;
  if (typeof d.raw === 'string') return `${base},"raw":${JSON.stringify(d.raw)}}`;
  const bytes = Buffer.from(d.raw.buffer, d.raw.byteOffset, d.raw.byteLength);
  const text = bytes.toString('utf8');
  return Buffer.from(text, 'utf8').equals(bytes) ? `${base},"raw":${JSON.stringify(text)}}` : `${base},"rawBase64":${JSON.stringify(bytes.toString('base64'))}}`;
}
