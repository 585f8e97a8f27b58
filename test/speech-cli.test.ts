/**
 * The speech pipeline's commands: `fixtures speech` (espeak-ng), `frames` (the front end's rows
 * for training elsewhere), `eval` (WER, CER, exact strings, the delay of partial words, and an
 * HTML report that headless Chromium renders), and what `train` and `import` say about speech.
 */
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { speechEventSchema } from '../pipelines/speech-digits/index.js';
import { projectPath } from '../src/paths.js';
import { renderedDom } from './support/chromium.js';
import { cli } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-speech-cli-'));
const f = (name: string): string => join(dir, name);
const DIGITS = /^(zero|one|two|three|four|five|six|seven|eight|nine)( (zero|one|two|three|four|five|six|seven|eight|nine)){0,7}$/;

describe('rnnstream fixtures speech', () => {
  it('synthesises digit strings with espeak-ng as 16 kHz chunks of the event format, interleaved, with the text and word ends on each last chunk', () => {
    const r = cli(['fixtures', 'speech', '--count', '6', '--seed', '4', '--concurrent', '3', '--chunk', '100:3000', '--alignments', '--out', f('s.jsonl')]);
    expect(r.code, r.stderr).toBe(0);
    const events = readFileSync(f('s.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { streamId: string; seq: number; last: boolean; text?: string; wordEnds?: number[]; pcm: string });
    const streams = new Map<string, typeof events>();
    for (const e of events) {
      expect(speechEventSchema.safeParse(e).success).toBe(true);
      streams.set(e.streamId, [...(streams.get(e.streamId) ?? []), e]);
    }
    expect(streams.size).toBe(6);
    // Interleaved: more changes of stream from one chunk to the next than one stream after another would make.
    expect(events.filter((e, i) => i > 0 && e.streamId !== events[i - 1]!.streamId).length).toBeGreaterThan(5);
    for (const chunks of streams.values()) {
      expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
      expect(chunks.map((c) => c.last)).toEqual(chunks.map((_, i) => i === chunks.length - 1));
      const last = chunks.at(-1)!;
      expect(last.text).toMatch(DIGITS);
      const samples = chunks.reduce((n, c) => n + Buffer.byteLength(c.pcm, 'base64') / 2, 0);
      expect(last.wordEnds).toHaveLength(last.text!.split(' ').length);
      expect(Math.max(...last.wordEnds!)).toBeLessThanOrEqual(samples);
      for (const c of chunks.slice(0, -1)) expect(Buffer.byteLength(c.pcm, 'base64') / 2).toBeLessThanOrEqual(3000);
    }
    // The same seed, the same bytes.
    expect(cli(['fixtures', 'speech', '--count', '6', '--seed', '4', '--concurrent', '3', '--chunk', '100:3000', '--alignments']).stdout).toBe(readFileSync(f('s.jsonl'), 'utf8'));
  });

  it('refuses a voice espeak-ng does not have, and bad ranges, with the reason', () => {
    const voice = cli(['fixtures', 'speech', '--count', '1', '--voices', 'xx-nowhere']);
    expect(voice.code).toBe(1);
    expect(voice.stderr).toMatch(/espeak-ng -v xx-nowhere failed/);
    const range = cli(['fixtures', 'speech', '--count', '1', '--speed', '300:100']);
    expect(range.code).toBe(2);
    expect(range.stderr).toMatch(/--speed must be A:B with 80 <= A <= B <= 450, got "300:100"/);
  });
});

describe('rnnstream frames', () => {
  it("writes the front end's rows per stream, and never over its input", () => {
    const r = cli(['frames', '--pipeline', 'speech-digits', '--input', projectPath('fixtures', 'speech-validation.jsonl.gz'), '--out', f('val')]);
    expect(r.code, r.stderr).toBe(0);
    const index = readFileSync(f('val.index.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { key: string; text: string; rows: number; offset: number });
    expect(index).toHaveLength(40);
    const rows = index.reduce((n, k) => n + k.rows, 0);
    expect(statSync(f('val.f32')).size).toBe(rows * 120 * 4);
    expect(index.every((k, i) => k.offset === (i === 0 ? 0 : index[i - 1]!.offset + index[i - 1]!.rows))).toBe(true);
    writeFileSync(f('in.index.jsonl'), '');
    const clobber = cli(['frames', '--pipeline', 'speech-digits', '--input', f('in.index.jsonl'), '--out', f('in')]);
    expect(clobber.code).toBe(2);
    expect(clobber.stderr).toMatch(/would write over the input/);
    const words = cli(['frames', '--pipeline', 'ball-direction', '--input', f('in.index.jsonl'), '--out', f('x')]);
    expect(words.code).toBe(2);
    expect(words.stderr).toMatch(/has no front end/);
  });
});

describe('speech in train, import and eval', () => {
  it('train points to the PyTorch script; import takes the training normalisation and names a bad one', () => {
    const train = cli(['train', '--pipeline', 'speech-digits']);
    expect(train.code).toBe(2);
    expect(train.stderr).toMatch(/scripts\/train-speech\.sh/);
    writeFileSync(f('norm.json'), JSON.stringify({ mean: [0, 1, 2], std: [1, 1, 1] }));
    const bad = cli(['import', 'test/onnx/lstm-1x16-linear2.onnx', '--out', f('m.json'), '--normalization', f('norm.json')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--normalization .*norm\.json: mean: expected 2 finite numbers \(one per feature\)/);
  });

  it('eval reports WER, CER, exact strings and word delays on the committed validation fixture, and an HTML page Chromium renders with a timeline per stream', () => {
    const report = f('speech-report.html');
    const r = cli(['eval', '--pipeline', 'speech-digits', '--backend', 'onnx', '--report', report, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const e = JSON.parse(r.stdout) as { streams: number; wer: number; cer: number; exact: number; delay: { words: number; medianFrames: number }; realTimeFactor: number };
    expect(e.streams).toBe(40);
    // The committed model: far better than chance on its own validation voices.
    expect(e.wer).toBeLessThan(0.2);
    expect(e.exact).toBeGreaterThan(0.5);
    expect(e.delay.words).toBeGreaterThan(50);
    expect(e.delay.medianFrames).toBeGreaterThan(0);
    expect(existsSync(report)).toBe(true);
    const dom = renderedDom(report);
    if (dom !== undefined) {
      expect(dom).toMatch(/WER/);
      expect((dom.match(/<figure id="stream-/g) ?? []).length).toBe(6);
      expect(dom).toMatch(/<svg[^>]*aria-label="s-\d+: &quot;[a-z ]+&quot; → &quot;[a-z ]*&quot;"/);
    }
  });
});
