/**
 * The CLI as users meet it: help, bad arguments, missing files, a bad model file and bad fixture
 * lines each end with a clear message (exit code 2 for usage), and replay's summary and output.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { projectPath } from '../src/paths.js';
import { cli } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-cli-'));
const fixture = join(dir, 'balls.jsonl');

beforeAll(() => {
  const r = cli(['fixtures', 'ball', '--keys', '12', '--seed', '3', '--out', fixture]);
  expect(r.code, r.stderr).toBe(0);
});

describe('rnnstream CLI', () => {
  it('--help lists every command', () => {
    const r = cli(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['replay', 'fixtures', 'train', 'eval', 'run', 'produce', 'random-model', 'backends']) expect(r.stdout).toContain(cmd);
  });

  it('runs as the package bin (npx rnnstream), not only as a file', () => {
    const r = spawnSync('npx', ['--no-install', 'rnnstream', '--help'], { encoding: 'utf8', cwd: projectPath(), timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Usage: rnnstream');
  });

  it.each([
    [['replay'], /required option '--pipeline <name>' not specified/],
    [['replay', '--pipeline', 'nope'], /unknown pipeline "nope"; expected one of: ball-direction, stock-moves/],
    [['replay', '--pipeline', 'ball-direction', '--backend', 'tpu'], /option '--backend <backend>' argument 'tpu' is invalid. Allowed choices are auto, webgpu/],
    [['replay', '--pipeline', 'ball-direction', '--batch-size', '0'], /--batch-size must be a positive integer, got "0"/],
    [['replay', '--pipeline', 'ball-direction', '--input', '/nonexistent/x.jsonl'], /cannot read input file \/nonexistent\/x\.jsonl: ENOENT/],
    [['fixtures', 'cats'], /'cats' is invalid for argument 'kind'. Allowed choices are ball, stock/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ])('%j exits 2 with a clear message', (args, message) => {
    const r = cli(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('a bad model file exits 2 naming the field and the expected shape', () => {
    const model = JSON.parse(readFileSync('pipelines/ball-direction/model.json', 'utf8'));
    model.layers[0].weightHh.pop();
    const bad = join(dir, 'bad-model.json');
    writeFileSync(bad, JSON.stringify(model));
    const r = cli(['replay', '--pipeline', 'ball-direction', '--input', fixture, '--model', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`invalid model file ${bad}:`);
    expect(r.stderr).toContain('layers[0].weightHh: expected shape [128, 32] (4 gate blocks x hiddenSize 32 for a lstm cell, by hiddenSize), got [127, 32]');
  });

  it('dead-letters bad fixture lines with reason and line, and replays the rest', () => {
    const lines = readFileSync(fixture, 'utf8').trim().split('\n');
    const mixed = join(dir, 'mixed.jsonl');
    writeFileSync(mixed, [lines[0], '{oops', lines[1], '{"ballId":"b-0000","frame":"x"}', '', ...lines.slice(2)].join('\n') + '\n');
    const dlq = join(dir, 'dead.jsonl');
    const r = cli(['replay', '--pipeline', 'ball-direction', '--input', mixed, '--backend', 'reference', '--dead-letters', dlq, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.deadLettered).toBe(2);
    expect(summary.predictions).toBe(lines.length);
    const dead = readFileSync(dlq, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(dead[0]).toMatchObject({ source: `${mixed}:2`, raw: '{oops' });
    expect(dead[0].reason).toMatch(/^not JSON/);
    expect(dead[1].source).toBe(`${mixed}:4`);
    expect(dead[1].reason).toContain('frame: Invalid input: expected number, received string; t: Invalid input: expected number, received undefined');
  });

  it('replay --json prints the summary and --out writes one prediction per event, per-key order kept', () => {
    const out = join(dir, 'preds.jsonl');
    const r = cli(['replay', '--pipeline', 'ball-direction', '--input', fixture, '--backend', 'onnx', '--out', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    const events = readFileSync(fixture, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(s).toMatchObject({ pipeline: 'ball-direction', events: events.length, keys: 12, predictions: events.length, deadLettered: 0 });
    expect(s.backend.name).toBe('onnx');
    expect(s.eventsPerSecond).toBeGreaterThan(0);
    expect(s.accuracy.accuracyByStep.length).toBeGreaterThanOrEqual(20);
    const preds = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(preds).toHaveLength(events.length);
    preds.forEach((p, i) => {
      expect(p.key).toBe(events[i].ballId);
      expect(p.seq).toBe(events[i].frame + 1);
      expect(p.label).toBe(events[i].direction);
      expect(Object.keys(p.probabilities)).toEqual(['E', 'NE', 'N', 'NW', 'W', 'SW', 'S', 'SE']);
      expect(p.probabilities[p.prediction]).toBe(Math.max(...(Object.values(p.probabilities) as number[])));
    });
  });

  it('backends reports each backend with ok or the reason it is unavailable', () => {
    const r = cli(['backends']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^reference +ok +float64/m);
    expect(r.stdout).toMatch(/^webgpu +(ok|no) +\S/m);
    expect(r.stdout).toMatch(/^auto picks \w+/m);
  });

  it('backends --check runs every working backend beside the float64 reference and reports pass', () => {
    const r = cli(['backends', '--check']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^conformance vs float64 reference \(50 steps, tolerance 0.0001\):$/m);
    // Every backend also checks its micro-batch path (every wave of a micro-batch in one call;
    // onnx's as one sequence run).
    for (const name of ['onnx', 'webasm', 'cpu']) expect(r.stdout).toMatch(new RegExp(`^${name} +pass +worst \\d\\.\\d+e-\\d+ over 18 cases, micro-batch path worst \\d\\.\\d+e-\\d+$`, 'm'));
  });

  it('a finished command ends the process even when a native handle would keep it alive', () => {
    // --import runs this before the CLI: a referenced interval, as Dawn's pump was.
    const keepAlive = join(dir, 'keep-alive.mjs');
    writeFileSync(keepAlive, 'setInterval(() => {}, 1000);\n');
    const started = Date.now();
    const r = spawnSync(process.execPath, ['--import', keepAlive, projectPath('dist', 'src', 'cli', 'main.js'), 'fixtures', 'stock', '--keys', '2', '--seed', '1', '--out', join(dir, 'kept-alive.jsonl')], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(readFileSync(join(dir, 'kept-alive.jsonl'), 'utf8')).toMatch(/"symbol"/);
    expect(r.stderr).toMatch(/the command finished 5 s ago but something .* kept the process alive; exiting/);
    expect(Date.now() - started).toBeLessThan(55_000);
  });

  it('fixtures are streamed: the first events of a 100,000-ball fixture (7M events) are out within seconds, never held whole', async () => {
    // Before, the whole fixture became one string first: "RangeError: Invalid string length".
    const child = spawn(process.execPath, [projectPath('dist', 'src', 'cli', 'main.js'), 'fixtures', 'ball', '--keys', '100000', '--seed', '4'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const started = performance.now();
    let text = '';
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no 5,000 lines in 60 s; stderr: ${stderr}`)), 60_000);
        child.stdout.on('data', (d: Buffer) => {
          text += d.toString();
          if (text.split('\n').length > 5000) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', (code) => reject(new Error(`exited ${code} before 5,000 lines: ${stderr}`)));
      });
    } finally {
      child.kill('SIGKILL');
    }
    process.stderr.write(`fixtures ball --keys 100000: 5,000 lines after ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    const events = text.split('\n').slice(0, 5000).map((l) => JSON.parse(l) as { ballId: string; frame: number });
    expect(events[0]).toMatchObject({ frame: 0 });
    expect(new Set(events.map((e) => e.ballId)).size).toBeGreaterThan(100);
  }, 90_000);

  it('produce takes the same TLS/SASL and config-file settings as run, and names what is wrong', () => {
    const noPassword = cli(['produce', '--pipeline', 'ball-direction', '--brokers', 'localhost:1', '--sasl-mechanism', 'scram-sha-256', '--sasl-username', 'loader'], { RNNSTREAM_SASL_PASSWORD: '' });
    expect(noPassword.code).toBe(2);
    expect(noPassword.stderr).toMatch(/sasl: a password is required: set RNNSTREAM_SASL_PASSWORD or sasl.passwordFile/);
    const config = join(dir, 'produce-config.json');
    writeFileSync(config, JSON.stringify({ brokers: ['not a broker'], sasl: { mechanism: 'md5', username: 'loader' } }));
    const bad = cli(['produce', '--pipeline', 'ball-direction', '--config', config]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/brokers\[0\] \(from config file .*produce-config.json\): expected host:port/);
    expect(bad.stderr).toMatch(/sasl.mechanism \(from config file .*\): Invalid option/);
  });
});
