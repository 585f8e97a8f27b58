/**
 * The third example, intent from words: word normalisation and hashed n-grams, the model file's
 * word input (its table beside the JSON, checked by sha256), `rnnstream fixtures words`, and the
 * pipeline end to end: a prediction with its top 3 after every word, bad words dead-lettered, a
 * key's state freed at its last word, and every backend within the conformance tolerance.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { from, lastValueFrom, tap, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import intentPipeline from '../pipelines/intent-from-words/index.js';
import { CONFORMANCE_SUITE } from '../src/backends/conformance.js';
import { resolveBackend } from '../src/backends/registry.js';
import type { BackendName } from '../src/backends/types.js';
import { BackendUnavailableError, ModelFileError, RnnStreamError, UsageError } from '../src/core/errors.js';
import { describeModel, type WordInput } from '../src/core/model.js';
import { loadModelFile } from '../src/adapters/model-file.js';
import { characterNgrams, embedWord, fnv1a, normaliseWord, WordVectors } from '../src/core/words.js';
import { outOfScopeRule } from '../src/pipeline/out-of-scope.js';
import { predict, stateStoreFor, type PipelineOutput, type PredictionRecord } from '../src/pipeline/predict.js';
import ballPipeline from '../pipelines/ball-direction/index.js';
import { replay } from '../src/replay/replay.js';
import { resolveServiceConfig } from '../src/service/config.js';
import { chooseOutOfScopeThreshold, utteranceReport, type FinishedKey } from '../src/eval/utterances.js';
import { cli } from './support/cli.js';
import { writeRandomWordModel } from './support/word-model.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'rnnstream-words-'));

describe('words as input', () => {
  it('normalises a word as written into the form it is looked up in', () => {
    const cases: [string, string][] = [
      ["What's", "what's"],
      ['today?', 'today'],
      ["'hotel'", 'hotel'],
      ['U.S.', 'u.s'],
      ['don\u2019t', "don't"],
      ['\uff21\uff22\uff23', 'abc'],
      ['?', '?'],
      ['(spanish),', 'spanish'],
    ];
    for (const [word, form] of cases) expect(normaliseWord(word), word).toBe(form);
  });

  it('takes character n-grams of the word in < > and hashes them with 32-bit FNV-1a', () => {
    expect(characterNgrams('ab', 3, 5)).toEqual(['<ab', 'ab>', '<ab>']);
    expect(characterNgrams('word', 3, 3)).toEqual(['<wo', 'wor', 'ord', 'rd>']);
    // The published FNV-1a test vectors.
    expect(fnv1a('')).toBe(0x811c9dc5);
    expect(fnv1a('a')).toBe(0xe40c292c);
    expect(fnv1a('foobar')).toBe(0xbf9cf968);
  });

  it('embeds a word as the mean of its vocabulary row and its n-grams\' rows; an unseen word by its n-grams alone', () => {
    const dim = 2;
    const buckets = 7;
    const rows = 2 + buckets + 1;
    const table = Float32Array.from({ length: rows * dim }, (_, i) => i);
    const input: WordInput = { dim, index: new Map([['hi', 0], ['yo', 1]]), buckets, minN: 3, maxN: 3, table };
    const mean = (rs: number[]): number[] => [0, 1].map((i) => rs.reduce((s, r) => s + table[r * dim + i]!, 0) / rs.length);
    const grams = (w: string): number[] => characterNgrams(w, 3, 3).map((g) => 2 + (fnv1a(g) % buckets));
    const out = new Float64Array(dim);
    const near = (got: Float64Array, want: number[]): void => want.forEach((v, i) => expect(got[i]).toBeCloseTo(v, 12));
    embedWord(input, 'Hi!', out);
    near(out, mean([0, ...grams('hi')]));
    embedWord(input, 'hey', out);
    near(out, mean(grams('hey')));
  });
});

describe('word vectors, cached', () => {
  it('are embedWord\'s, bit for bit, and the cache holds at most its capacity', () => {
    const model = loadModelFile(writeRandomWordModel(tmp()));
    const input = model.input!;
    const vectors = new WordVectors(input, 3);
    const words = ['What', 'is', 'my', 'balance?', 'is', 'What', 'remindr', 'flight', 'is'];
    for (const w of words) {
      const want = new Float64Array(input.dim);
      embedWord(input, w, want);
      const got = new Float64Array(input.dim);
      vectors.into(w, got);
      expect([...got], w).toEqual([...want]);
    }
    expect((vectors as unknown as { vectors: Map<string, unknown> }).vectors.size).toBeLessThanOrEqual(3);
  });
});

describe('a model file with word input', () => {
  it('keeps its table beside the JSON, named with its sha256, and loads it back', () => {
    const dir = tmp();
    const path = writeRandomWordModel(dir);
    const doc = JSON.parse(readFileSync(path, 'utf8'));
    expect(doc.input.table.file).toBe('model.words.f32');
    const model = loadModelFile(path);
    expect(model.inputSize).toBe(8);
    expect(model.input!.index.get('balance')).toBe(3);
    expect(describeModel(model)).toBe('words(7+50->8) > gru(8->16) > softmax[151]');
    expect(loadModelFile(path).hash).toBe(model.hash);
  });

  it('refuses a table that is not the one the JSON names, is cut short, is missing, or is named by a path', () => {
    const dir = tmp();
    const path = writeRandomWordModel(dir);
    const table = join(dir, 'model.words.f32');
    const bytes = readFileSync(table);
    const expectRefused = (why: RegExp): void => {
      let err: unknown;
      try {
        loadModelFile(path);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ModelFileError);
      expect((err as Error).message).toMatch(why);
    };
    const flipped = Buffer.from(bytes);
    flipped[100] = flipped[100]! ^ 1;
    writeFileSync(table, flipped);
    expectRefused(/input\.table\.sha256: "model\.words\.f32" has sha256 [0-9a-f]{64}, the model names/);
    writeFileSync(table, bytes.subarray(0, 64));
    expectRefused(/expected 1856 bytes \(58 rows of 8 float32s\), "model\.words\.f32" has 64/);
    writeFileSync(table, bytes);
    const doc = JSON.parse(readFileSync(path, 'utf8'));
    writeFileSync(path, JSON.stringify({ ...doc, input: { ...doc.input, table: { ...doc.input.table, file: 'gone.f32' } } }));
    expectRefused(/cannot read "gone\.f32"/);
    writeFileSync(path, JSON.stringify({ ...doc, input: { ...doc.input, table: { ...doc.input.table, file: '../etc/passwd' } } }));
    expectRefused(/expected a file name beside the model, got a path/);
  });
});

describe('rnnstream fixtures words', () => {
  const utterances = ['{"text":"what is my balance","intent":"balance"}', '{"text":"book a flight","intent":"book_flight"}', '', '{"text":"hi","intent":"oos"}'];

  it('makes one event per whitespace token with stable ids, and interleaves utterances without reordering any', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'u.jsonl'), utterances.join('\n') + '\n');
    const one = cli(['fixtures', 'words', '--input', join(dir, 'u.jsonl'), '--out', join(dir, 'w.jsonl.gz')]);
    expect(one.code, one.stderr).toBe(0);
    const events = gunzipSync(readFileSync(join(dir, 'w.jsonl.gz'))).toString('utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(events[0]).toEqual({ utteranceId: 'u-0', index: 0, word: 'what', last: false, intent: 'balance' });
    expect(events.map((e) => `${e.utteranceId}:${e.word}${e.last ? '.' : ''}`)).toEqual(['u-0:what', 'u-0:is', 'u-0:my', 'u-0:balance.', 'u-1:book', 'u-1:a', 'u-1:flight.', 'u-2:hi.']);
    const two = cli(['fixtures', 'words', '--input', join(dir, 'u.jsonl'), '--concurrent', '2']);
    const mixed = two.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(mixed.map((e) => `${e.utteranceId}:${e.index}`)).toEqual(['u-0:0', 'u-1:0', 'u-0:1', 'u-1:1', 'u-0:2', 'u-1:2', 'u-0:3', 'u-2:0']);
  });

  it('refuses a bad line naming the file, the line and the field, never its contents', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'u.jsonl'), `${utterances[0]}\n{"text":"   ","intent":"x"}\n`);
    const r = cli(['fixtures', 'words', '--input', join(dir, 'u.jsonl')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('u.jsonl:2: text: expected at least one word, got none');
    writeFileSync(join(dir, 'v.jsonl'), 'PW-S3cr3t-4242\n');
    const secret = cli(['fixtures', 'words', '--input', join(dir, 'v.jsonl')]);
    expect(secret.code).toBe(2);
    expect(secret.stderr).toContain('v.jsonl:1: not a JSON object');
    expect(secret.stderr).not.toContain('S3cr3t');
  });
});

/** Word events as records in memory. */
const records = (events: readonly object[]) => events.map((e, index) => ({ value: JSON.stringify(e), source: { kind: 'memory' as const, index } }));
const word = (utteranceId: string, index: number, w: string, last = false, intent = 'balance') => ({ utteranceId, index, word: w, last, intent });

describe('the intent-from-words pipeline', () => {
  const stream = [
    word('u-1', 0, 'what'),
    word('u-2', 0, 'book', false, 'book_flight'),
    word('u-1', 1, 'is'),
    word('u-2', 1, 'a', false, 'book_flight'),
    word('u-1', 1, 'is'), // a duplicate word
    word('u-1', 2, 'my'),
    word('u-2', 2, 'flight', true, 'book_flight'),
    word('u-1', 3, 'balance?', true),
    word('u-1', 4, 'please'), // after its last word
    word('u-3', 0, ''), // an empty word
    word('u-4', 2, 'late'), // its first words were lost
    word('u-5', 0, 'hello', true, 'oos'),
  ];

  it('predicts after every word with the top 3 intents, dead-letters bad words, and frees a key\'s state at its last word', async () => {
    const model = loadModelFile(writeRandomWordModel(tmp()));
    const { backend } = await resolveBackend('onnx', model);
    const store = stateStoreFor(intentPipeline, model);
    const freedAtLast: boolean[] = [];
    const out = await lastValueFrom(
      from(records(stream)).pipe(
        predict(intentPipeline, model, { backend, store }),
        tap((o) => {
          if (o.kind === 'prediction' && o.ended) freedAtLast.push(store.get(o.key) === undefined);
        }),
        toArray(),
      ),
    );
    backend.dispose();
    const summary = out.map((o: PipelineOutput) => (o.kind === 'prediction' ? `${o.key}#${o.seq}${o.ended ? '.' : ''}` : o.kind === 'dead-letter' ? `dead: ${o.reason}` : o.kind));
    expect(summary).toEqual([
      'u-1#1',
      'u-2#1',
      'u-1#2',
      'u-2#2',
      'dead: duplicate: index 1 is not after the key\'s last applied index 1',
      'u-1#3',
      'u-2#3.',
      'u-1#4.',
      "dead: out of order: index 4 but the key has no earlier events (its first must be 0; a key's events after its last one start nothing)",
      expect.stringMatching(/^dead: .*word.*expected string to have >=1 characters/),
      "dead: out of order: index 2 but the key has no earlier events (its first must be 0; a key's events after its last one start nothing)",
      'u-5#1.',
    ]);
    expect(freedAtLast).toEqual([true, true, true]);
    expect(store.size).toBe(0);
    for (const o of out) {
      if (o.kind !== 'prediction') continue;
      expect(o.top).toHaveLength(3);
      const p = o.top!.map((k) => o.output[k]!);
      expect(p[0]).toBeGreaterThanOrEqual(p[1]!);
      expect(p[1]).toBeGreaterThanOrEqual(p[2]!);
      expect(o.prediction).toBe(o.names[o.top![0]!]);
      expect(Math.max(...o.output)).toBe(p[0]);
    }
  });

  it('gives the same outputs on every backend, within the conformance tolerance of the float64 reference', async () => {
    const model = loadModelFile(writeRandomWordModel(tmp(), { dim: 16, hidden: 32, buckets: 200 }));
    const good = stream.filter((e) => e.word !== '' && !(e.utteranceId === 'u-1' && e.word === 'please') && e.utteranceId !== 'u-4');
    const run = async (name: BackendName | 'reference'): Promise<Float32Array[] | string> => {
      let backend;
      try {
        backend = (await resolveBackend(name, model)).backend;
      } catch (err) {
        if (err instanceof BackendUnavailableError) return err.reason;
        throw err;
      }
      try {
        const out = await lastValueFrom(from(records(good)).pipe(predict(intentPipeline, model, { backend, store: stateStoreFor(intentPipeline, model) }), toArray()));
        return out.flatMap((o) => (o.kind === 'prediction' ? [o.output] : []));
      } finally {
        backend.dispose();
      }
    };
    const reference = await run('reference');
    if (typeof reference === 'string') throw new Error(reference);
    expect(reference).toHaveLength(good.length - 1); // the duplicate is dead-lettered
    for (const name of ['onnx', 'webasm', 'cpu', 'gpu'] as const) {
      const outputs = await run(name);
      if (typeof outputs === 'string') {
        if (process.env.CI === 'true') throw new Error(`${name} must run in CI: ${outputs}`);
        continue;
      }
      let worst = 0;
      outputs.forEach((o, i) => o.forEach((v, k) => (worst = Math.max(worst, Math.abs(v - reference[i]![k]!)))));
      expect(worst, name).toBeLessThan(CONFORMANCE_SUITE.tolerance);
    }
  });
});

describe('utterances scored', () => {
  const key = (label: string, predictions: string[], top: number[]): FinishedKey => ({ label, predictions, topProbabilities: top });
  const keys = [
    key('a', ['b', 'a'], [0.4, 0.9]),
    key('a', ['a', 'a'], [0.5, 0.3]), // right, but unsure
    key('b', ['b'], [0.8]),
    key('b', ['a', 'a'], [0.3, 0.2]), // wrong and unsure
    key('oos', ['a', 'b'], [0.3, 0.25]),
    key('oos', ['oos'], [0.7]),
  ];

  it('reports final-word accuracy, oos as a class and below a threshold, and early intent', () => {
    const r = utteranceReport(keys, 'oos', 0.26);
    expect(r.accuracy).toBeCloseTo(4 / 6);
    expect(r.asClass).toEqual({ inScopeAccuracy: 3 / 4, outOfScopeRecall: 1 / 2 });
    // Below 0.26: the unsure wrong "a" (0.2) and the oos key's "b" (0.25) become oos.
    expect(r.threshold).toEqual({ value: 0.26, inScopeAccuracy: 3 / 4, outOfScopeRecall: 1 });
    // After 25 % and 50 % of the words, the first prediction of the two-word keys counts.
    expect(r.earlyIntent.map((e) => e.accuracy)).toEqual([3 / 6, 3 / 6, 4 / 6, 4 / 6]);
  });

  it('chooses the threshold with the best oos recall that costs at most one point of in-scope accuracy', () => {
    // The oos key answered "b" at 0.25: 0.26 is the lowest threshold it falls below, and the in-scope
    // answer that also turns oos there (0.2) was wrong anyway, so it costs no in-scope accuracy.
    expect(chooseOutOfScopeThreshold(keys, 'oos')).toEqual({ value: 0.26, inScopeAccuracy: 3 / 4, outOfScopeRecall: 1 });
  });
});

describe("the model's out-of-scope threshold, served (issue 25, item 7)", () => {
  /** Replays the committed validation fixture's first utterances with the committed model. */
  async function served(outOfScopeThreshold?: number): Promise<{ records: PredictionRecord[]; rule: unknown }> {
    const records: PredictionRecord[] = [];
    const summary = await replay(
      { pipeline: 'intent-from-words', backend: 'onnx', ...(outOfScopeThreshold === undefined ? {} : { outOfScopeThreshold }) },
      { onPrediction: (p) => void (records.length < 4000 && records.push(p)), onDeadLetter: () => {} },
    );
    return { records, rule: summary.outOfScope };
  }
  const topOf = (p: PredictionRecord): { name: string; probability: number } => {
    let best = 0;
    for (let k = 1; k < p.output.length; k++) if (p.output[k]! > p.output[best]!) best = k;
    return { name: p.names[best]!, probability: p.output[best]! };
  };

  it("predicts oos under the threshold stored in the model, keeps the raw class in topClass, and a flag overrides it", async () => {
    const stored = await served();
    expect(stored.rule).toEqual({ label: 'oos', threshold: 0.22, from: 'model' });
    let under = 0;
    for (const p of stored.records) {
      const top = topOf(p);
      expect(p.topClass).toBe(top.name);
      expect(p.prediction).toBe(top.probability < 0.22 ? 'oos' : top.name);
      if (top.probability < 0.22 && top.name !== 'oos') under++;
    }
    // Both sides of the threshold occur in what was checked.
    expect(under).toBeGreaterThan(100);
    expect(stored.records.filter((p) => p.prediction !== 'oos').length).toBeGreaterThan(100);

    const flagged = await served(0.5);
    expect(flagged.rule).toEqual({ label: 'oos', threshold: 0.5, from: 'flag' });
    for (const p of flagged.records) expect(p.prediction).toBe(topOf(p).probability < 0.5 ? 'oos' : topOf(p).name);

    const off = await served(0);
    expect(off.rule).toBeUndefined();
    for (const p of off.records) {
      expect(p.topClass).toBeUndefined();
      expect(p.prediction).toBe(topOf(p).name);
    }
  }, 60_000);

  it('refuses a threshold where it cannot apply, and a model whose stored rule does not fit the pipeline', () => {
    const model = loadModelFile('pipelines/intent-from-words/model.json');
    expect(() => outOfScopeRule(ballPipeline, loadModelFile('pipelines/ball-direction/model.json'), 0.3)).toThrow(UsageError);
    expect(() => outOfScopeRule(ballPipeline, loadModelFile('pipelines/ball-direction/model.json'), 0.3)).toThrow(/pipeline "ball-direction" has no out-of-scope class/);
    expect(outOfScopeRule(ballPipeline, loadModelFile('pipelines/ball-direction/model.json'))).toBeUndefined();
    expect(() => outOfScopeRule(intentPipeline, model, 1.5)).toThrow(/expected a probability from 0 to 1, got 1.5/);
    const renamed = { ...model, file: { ...model.file, training: { outOfScope: { label: 'none', threshold: 0.3 } } } };
    expect(() => outOfScopeRule(intentPipeline, renamed)).toThrow(RnnStreamError);
    expect(() => outOfScopeRule(intentPipeline, renamed)).toThrow(/training.outOfScope.label is "none", but pipeline "intent-from-words" calls its out-of-scope class "oos"/);
    const bad = { ...model, file: { ...model.file, training: { outOfScope: { label: 'oos', threshold: 'high' } } } };
    expect(() => outOfScopeRule(intentPipeline, bad)).toThrow(/training.outOfScope: threshold: .*expected number/);
    const none = { ...model, file: { ...model.file, training: {} } };
    expect(outOfScopeRule(intentPipeline, none)).toBeUndefined();
    expect(outOfScopeRule(intentPipeline, none, 0.4)).toEqual({ label: 'oos', labelIndex: model.head.names.indexOf('oos'), threshold: 0.4, from: 'flag' });
  });

  it('the service takes it from its config, RNNSTREAM_OOS_THRESHOLD or --oos-threshold', () => {
    const base = { pipeline: 'intent-from-words', brokers: 'b:9092' };
    expect(resolveServiceConfig({ env: { RNNSTREAM_PIPELINE: base.pipeline, RNNSTREAM_BROKERS: base.brokers } }).config.outOfScopeThreshold).toBeUndefined();
    expect(resolveServiceConfig({ env: { RNNSTREAM_PIPELINE: base.pipeline, RNNSTREAM_BROKERS: base.brokers, RNNSTREAM_OOS_THRESHOLD: '0.35' } }).config.outOfScopeThreshold).toBe(0.35);
    expect(resolveServiceConfig({ env: { RNNSTREAM_PIPELINE: base.pipeline, RNNSTREAM_BROKERS: base.brokers, RNNSTREAM_OOS_THRESHOLD: '0.35' }, flags: { outOfScopeThreshold: 0 } }).config.outOfScopeThreshold).toBe(0);
    expect(() => resolveServiceConfig({ env: { RNNSTREAM_PIPELINE: base.pipeline, RNNSTREAM_BROKERS: base.brokers, RNNSTREAM_OOS_THRESHOLD: 'high' } })).toThrow(/outOfScopeThreshold \(from environment \(RNNSTREAM_\*\)\)/);
    const r = cli(['replay', '--pipeline', 'ball-direction', '--oos-threshold', '0.3']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/pipeline "ball-direction" has no out-of-scope class/);
    expect(cli(['replay', '--pipeline', 'intent-from-words', '--oos-threshold', '2']).stderr).toMatch(/--oos-threshold must be a probability from 0 to 1, got "2"/);
  });
});

describe('fnv1a', () => {
  it('hashes the UTF-8 bytes TextEncoder gives, lone surrogates included, without encoding first', () => {
    const reference = (text: string): number => {
      let hash = 0x811c9dc5;
      for (const byte of new TextEncoder().encode(text)) hash = Math.imul(hash ^ byte, 0x01000193);
      return hash >>> 0;
    };
    const texts = ['', 'a', '<book>', 'ünïcödé', '日本語の単語', 'emoji 🎈 and 👩‍👩‍👧', 'lone \ud800 high', 'lone \udc00 low', 'end \ud83d', '\u07ff\u0800\uffff'];
    for (let i = 0; i < 200; i++) texts.push(String.fromCharCode(...Array.from({ length: 1 + (i % 9) }, (_, j) => (i * 7919 + j * 104729) % 0x10000)));
    for (const t of texts) expect(fnv1a(t), JSON.stringify(t)).toBe(reference(t));
  });
});
