/**
 * `npm run soak` (issue 26, item 5; not in CI): the Kafka service for a long run at a steady
 * rate, exactly once, on a 3-node cluster of the jar broker, with a broker killed (SIGKILL) and
 * restarted every few minutes, an instance added half way and one removed at three quarters.
 *
 *   node dist/bench/soak.js [--minutes 20] [--rate 5000] [--kill-every 5] [--out soak.html]
 *
 * Every 5 s it samples each instance's RSS (/proc), the consumer lag and the end-to-end latency
 * histogram (/metrics). At the end it stops producing, waits for the group to catch up, stops the
 * instances, and reads every output and dead letter back (read_committed): each input offset must
 * have exactly one. It writes soak.json and soak.html (RSS, lag and p99 latency over time, with
 * the kills and the instance changes marked), and opens the page in headless Chromium to check
 * that its three charts render. Services run as node processes themselves, so kill hits them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { ballEvents } from '../src/fixtures/ball.js';
import { projectPath } from '../src/paths.js';

const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const minutes = opt('--minutes', 20);
const rate = opt('--rate', 5000);
const killEveryMs = opt('--kill-every', 5) * 60_000;
const out = resolve(args.includes('--out') ? args[args.indexOf('--out') + 1]! : 'soak.html');
const PARTITIONS = 6;
const SAMPLE_MS = 5000;

type KafkaBroker = typeof import('../scripts/kafka-broker.mjs');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const since = (t0: number): number => (performance.now() - t0) / 1000;

interface Instance {
  readonly name: string;
  readonly child: ChildProcess;
  log: string;
  http?: string;
  /** The last latency bucket counts seen, for per-window deltas. */
  buckets?: Map<string, number>;
}

interface Sample {
  readonly t: number;
  readonly rssMb: Record<string, number>;
  readonly lag: number;
  readonly p99: number | undefined;
  readonly produced: number;
}

/** Each instance's log goes to a file beside the report too (soak-instance-N.log), for what the page cannot say. */
function startInstance(name: string, flags: string[]): Instance {
  const child = spawn(process.execPath, ['--max-semi-space-size=64', projectPath('dist', 'src', 'cli', 'main.js'), 'run', ...flags], { stdio: ['ignore', 'ignore', 'pipe'] });
  const instance: Instance = { name, child, log: '' };
  const file = createWriteStream(`${out.replace(/\.html$/, '')}-${name.replace(/\s+/g, '-')}.log`);
  child.stderr!.pipe(file);
  child.stderr!.on('data', (d: Buffer) => {
    instance.log = (instance.log + d.toString()).slice(-200_000);
    const started = instance.http ? undefined : instance.log.split('\n').find((l) => l.includes('"msg":"service started"'));
    if (started) instance.http = /"http":"([^"]+)"/.exec(started)?.[1];
  });
  return instance;
}

function rssMb(pid: number | undefined): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Lag (summed) and the latency buckets' counts from one instance's /metrics. */
async function scrape(i: Instance): Promise<{ lag: number; buckets: Map<string, number> } | undefined> {
  if (!i.http) return undefined;
  try {
    const text = await (await fetch(`${i.http}/metrics`, { signal: AbortSignal.timeout(3000) })).text();
    let lag = 0;
    for (const m of text.matchAll(/^rnnstream_consumer_lag_records\{[^}]*\} (\S+)$/gm)) lag += Number(m[1]);
    const buckets = new Map<string, number>();
    for (const m of text.matchAll(/^rnnstream_end_to_end_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$/gm)) buckets.set(m[1]!, Number(m[2]));
    return { lag, buckets };
  } catch {
    return undefined;
  }
}

/** p99 of the observations between two snapshots of cumulative buckets, summed over instances (upper bound of its bucket). */
function p99Of(deltas: Map<string, number>): number | undefined {
  const les = [...deltas.keys()].sort((a, b) => (a === '+Inf' ? 1 : b === '+Inf' ? -1 : Number(a) - Number(b)));
  const total = deltas.get('+Inf') ?? 0;
  if (total <= 0) return undefined;
  for (const le of les) if ((deltas.get(le) ?? 0) >= 0.99 * total) return le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le);
  return undefined;
}

/** Produces ball events at `rate` per second until stopped; returns how many were acknowledged. */
function steadyProducer(producer: Producer, topic: string): { stop: () => Promise<number>; produced: () => number; failures: () => number; acknowledged: Map<number, number> } {
  /** The highest base offset the broker acknowledged, per partition: a later high watermark below it would be a lost write. */
  const acknowledged = new Map<number, number>();
  let sent = 0;
  let failures = 0;
  let running = true;
  let cycle = 0;
  let source = ballEvents({ keys: 2000, seed: 1 });
  const next = (): { key: string; value: string } => {
    let r = source.next();
    if (r.done) {
      // A new set of balls under new ids: frames start again from 0 for new keys.
      cycle++;
      source = ballEvents({ keys: 2000, seed: 1 + cycle });
      r = source.next();
    }
    const e = { ...r.value, ballId: `c${cycle}-${r.value.ballId}` };
    return { key: e.ballId, value: JSON.stringify(e) };
  };
  const t0 = performance.now();
  let pending: { key: string; value: string }[] = [];
  const loop = (async () => {
    while (running) {
      const due = Math.floor((rate * (performance.now() - t0)) / 1000) - sent - pending.length;
      for (let i = 0; i < Math.min(due, 5 * rate); i++) pending.push(next());
      if (pending.length > 0) {
        try {
          const acked = await producer.send({ topic, messages: pending, acks: -1, timeout: 30_000 });
          for (const r of acked) acknowledged.set(r.partition, Math.max(acknowledged.get(r.partition) ?? 0, Number(r.baseOffset ?? r.offset ?? 0)));
          sent += pending.length;
          pending = [];
        } catch {
          failures++; // sent again on the next turn (the idempotent producer drops its own repeats)
        }
      }
      await sleep(100);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return sent;
    },
    produced: () => sent,
    failures: () => failures,
    acknowledged,
  };
}

/**
 * Every output and dead letter of the run (read_committed), counted per input partition and
 * offset. Read until nothing more has come for 15 s: a transactional topic ends on commit
 * markers, which take offsets that no record comes back for.
 */
async function countOutputs(kafka: Kafka, topics: string[], inputTopic: string, ends: Map<number, number>): Promise<{ lost: number; duplicated: number; outputs: number }> {
  const counts = new Map([...ends].map(([p, end]) => [p, new Uint8Array(end)]));
  const consumer = kafka.consumer({ groupId: `soak-reader-${randomUUID()}`, readUncommitted: false, maxBytesPerPartition: 4 << 20 });
  await consumer.connect();
  for (const topic of topics) await consumer.subscribe({ topic, fromBeginning: true });
  let outputs = 0;
  let lastSeen = performance.now();
  // Each output record counts once, by its own topic, partition and offset: a reader that is
  // rejoined re-reads from its last commit, and that must not look like a duplicate output.
  const read = new Map<string, Set<number>>();
  const firstOf = new Map<string, string>();
  const examples: string[] = [];
  const source = new RegExp(`"source":\\{"topic":"${inputTopic.replace(/\./g, '\\.')}","partition":(\\d+),"offset":"(\\d+)"\\}`);
  await consumer.run({
    eachBatch: async ({ batch }) => {
      const at = `${batch.topic}/${batch.partition}`;
      let seen = read.get(at);
      if (!seen) read.set(at, (seen = new Set()));
      for (const m of batch.messages) {
        if (seen.has(Number(m.offset))) continue;
        seen.add(Number(m.offset));
        const s = source.exec(m.value?.toString() ?? '');
        if (!s) continue;
        const c = counts.get(Number(s[1]));
        const input = `${s[1]}/${s[2]}`;
        if (c) c[Number(s[2])] = Math.min(255, c[Number(s[2])]! + 1);
        if (c && c[Number(s[2])]! > 1 && examples.length < 10) examples.push(`input ${input}: outputs ${firstOf.get(input)} and ${at}@${m.offset}`);
        else if (examples.length < 10) firstOf.set(input, `${at}@${m.offset}`);
        outputs++;
      }
      lastSeen = performance.now();
    },
  });
  while (performance.now() - lastSeen < 15_000) await sleep(1000);
  await consumer.disconnect();
  if (examples.length > 0) process.stderr.write(`inputs with more than one output, e.g.:\n  ${examples.join('\n  ')}\n`);
  let lost = 0;
  let duplicated = 0;
  for (const c of counts.values()) for (const n of c) if (n === 0) lost++;
  else if (n > 1) duplicated++;
  return { lost, duplicated, outputs };
}

function svgChart(title: string, unit: string, series: { name: string; points: [number, number][] }[], marks: { t: number; label: string }[], seconds: number): string {
  const W = 900;
  const H = 220;
  const max = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite));
  const x = (t: number): number => 50 + ((W - 60) * t) / seconds;
  const y = (v: number): number => H - 25 - ((H - 45) * Math.min(v, max)) / max;
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
  const lines = series.map((s, k) => `<polyline fill="none" stroke="${colors[k % colors.length]}" stroke-width="1.5" points="${s.points.filter((p) => Number.isFinite(p[1])).map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')}"><title>${s.name}</title></polyline>`);
  const legend = series.map((s, k) => `<text x="${60 + 150 * k}" y="14" fill="${colors[k % colors.length]}">${s.name}</text>`);
  const markLines = marks.map((m) => `<line x1="${x(m.t)}" x2="${x(m.t)}" y1="20" y2="${H - 25}" stroke="#999" stroke-dasharray="3,3"><title>${m.label}</title></line>`);
  return `<h2>${title}</h2><svg class="chart" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">
<line x1="50" y1="${H - 25}" x2="${W - 10}" y2="${H - 25}" stroke="#333"/><line x1="50" y1="20" x2="50" y2="${H - 25}" stroke="#333"/>
<text x="5" y="${y(max) + 4}">${max.toPrecision(3)}</text><text x="5" y="${H - 25}">0 ${unit}</text><text x="${W - 60}" y="${H - 8}">${(seconds / 60).toFixed(0)} min</text>
${markLines.join('\n')}${lines.join('\n')}${legend.join('')}</svg>`;
}

async function main(): Promise<void> {
  const { startJarCluster } = (await import(projectPath('scripts', 'kafka-broker.mjs'))) as KafkaBroker;
  const cluster = await startJarCluster({ nodes: 3 });
  const brokers = cluster.values.KAFKA_BROKERS!;
  const kafka = new Kafka({ clientId: 'rnnstream-soak', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const id = randomUUID().slice(0, 8);
  const topics = { input: `soak-${id}.input`, output: `soak-${id}.predictions`, dlq: `soak-${id}.dead-letters`, changelog: `soak-${id}.changelog` };
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: topics.input, numPartitions: PARTITIONS, replicationFactor: 3 }] });
  await admin.disconnect();
  const flags = ['--pipeline', 'ball-direction', '--brokers', brokers, '--group', `soak-${id}`, '--input-topic', topics.input, '--output-topic', topics.output, '--dlq-topic', topics.dlq, '--changelog-topic', topics.changelog, '--guarantee', 'exactly-once', '--http-port', '0', '--backend', 'onnx'];
  const instances: Instance[] = [startInstance('instance 1', flags), startInstance('instance 2', flags)];
  const stopped: Instance[] = [];
  const marks: { t: number; label: string }[] = [];
  const samples: Sample[] = [];
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false, retry: { retries: 20 } });
  await producer.connect();
  const t0 = performance.now();
  const feed = steadyProducer(producer, topics.input);
  const durationMs = minutes * 60_000;
  const schedule: { at: number; what: () => void | Promise<void>; label: string }[] = [];
  for (let k = 1; k * killEveryMs < durationMs; k++) {
    const broker = ((k - 1) % 3) + 1;
    schedule.push({ at: k * killEveryMs, label: `broker ${broker} killed`, what: () => void spawnSync(process.execPath, [projectPath('scripts', 'kafka.mjs'), 'kill', '--dir', cluster.dir, '--broker', String(broker)]) });
    schedule.push({ at: k * killEveryMs + 30_000, label: `broker ${broker} restarted`, what: () => void spawnSync(process.execPath, [projectPath('scripts', 'kafka.mjs'), 'restart', '--dir', cluster.dir, '--broker', String(broker)], { timeout: 180_000 }) });
  }
  schedule.push({ at: durationMs / 2, label: 'instance 3 added', what: () => void instances.push(startInstance('instance 3', flags)) });
  schedule.push({ at: (3 * durationMs) / 4, label: 'instance 1 removed', what: () => {
    const i = instances.shift()!;
    i.child.kill('SIGTERM');
    stopped.push(i);
  } });
  schedule.sort((a, b) => a.at - b.at);
  let nextSample = 0;
  while (performance.now() - t0 < durationMs) {
    const now = performance.now() - t0;
    while (schedule.length > 0 && schedule[0]!.at <= now) {
      const s = schedule.shift()!;
      marks.push({ t: since(t0), label: s.label });
      process.stderr.write(`[${since(t0).toFixed(0)} s] ${s.label}\n`);
      await s.what();
    }
    if (now >= nextSample) {
      nextSample += SAMPLE_MS;
      const rss: Record<string, number> = {};
      let lag = 0;
      const deltas = new Map<string, number>();
      for (const i of instances) {
        const r = rssMb(i.child.pid);
        if (r !== undefined) rss[i.name] = r;
        const m = await scrape(i);
        if (!m) continue;
        lag += m.lag;
        for (const [le, n] of m.buckets) deltas.set(le, (deltas.get(le) ?? 0) + n - (i.buckets?.get(le) ?? 0));
        i.buckets = m.buckets;
      }
      samples.push({ t: since(t0), rssMb: rss, lag, p99: p99Of(deltas), produced: feed.produced() });
      const last = samples.at(-1)!;
      process.stderr.write(`[${last.t.toFixed(0)} s] produced ${last.produced}, lag ${last.lag}, p99 ${last.p99 ?? '-'} s, RSS ${Object.values(rss).map((v) => v.toFixed(0)).join('/')} MB\n`);
    }
    await sleep(250);
  }
  const produced = await feed.stop();
  marks.push({ t: since(t0), label: 'producing stopped' });
  process.stderr.write(`produced ${produced} events (${feed.failures()} sends retried); waiting for the group to catch up\n`);
  const ends = new Map<number, number>();
  const watcher = kafka.admin();
  await watcher.connect();
  for (const o of await watcher.fetchTopicOffsets(topics.input)) ends.set(o.partition, Number(o.high));
  const caughtUpBy = performance.now() + 600_000;
  for (;;) {
    const [committed] = await watcher.fetchOffsets({ groupId: `soak-${id}`, topics: [topics.input] });
    const behind = committed!.partitions.reduce((n, p) => n + Math.max(0, (ends.get(p.partition) ?? 0) - Math.max(0, Number(p.offset))), 0);
    if (behind === 0) break;
    if (performance.now() > caughtUpBy) {
      // Reported, not hidden: the outputs are then read as they are, and what is missing counts as lost.
      process.stderr.write(`the group had ${behind} events left 10 minutes after the end\n`);
      break;
    }
    await sleep(1000);
  }
  await watcher.disconnect();
  const caughtUp = since(t0);
  for (const i of instances) i.child.kill('SIGTERM');
  await Promise.all(instances.map((i) => new Promise((r) => (i.child.exitCode !== null ? r(null) : i.child.once('exit', r)))));
  await producer.disconnect();
  const verdict = await countOutputs(kafka, [topics.output, topics.dlq], topics.input, ends);
  cluster.stop();

  // RSS slope: a least-squares line through the instances' total RSS after the first 2 minutes.
  const steady = samples.filter((s) => s.t > 120);
  const total = (s: Sample): number => Object.values(s.rssMb).reduce((a, b) => a + b, 0);
  const perInstance = steady.map((s) => ({ t: s.t, mb: total(s) / Math.max(1, Object.keys(s.rssMb).length) }));
  const n = perInstance.length;
  const mt = perInstance.reduce((a, p) => a + p.t, 0) / n;
  const mm = perInstance.reduce((a, p) => a + p.mb, 0) / n;
  const slope = perInstance.reduce((a, p) => a + (p.t - mt) * (p.mb - mm), 0) / perInstance.reduce((a, p) => a + (p.t - mt) ** 2, 0);
  const p99s = samples.map((s) => s.p99).filter((v): v is number => v !== undefined && Number.isFinite(v)).sort((a, b) => a - b);
  const summary = {
    minutes,
    rate,
    produced,
    events: [...ends.values()].reduce((a, b) => a + b, 0),
    // A partition whose end is not past every acknowledged write lost some (it should never).
    acknowledgedBeyondEnd: [...feed.acknowledged].filter(([p, o]) => o >= (ends.get(p) ?? 0)).map(([p]) => p),
    lost: verdict.lost,
    duplicated: verdict.duplicated,
    outputsRead: verdict.outputs,
    caughtUpSeconds: caughtUp - minutes * 60,
    rssSlopeMbPerHour: slope * 3600,
    rssMb: { first: samples[0] ? total(samples[0]) : 0, max: Math.max(...samples.map(total)) },
    maxLag: Math.max(...samples.map((s) => s.lag)),
    p99Seconds: { median: p99s[p99s.length >> 1], worst: p99s.at(-1) },
    marks,
  };
  const seconds = caughtUp;
  const names = [...new Set(samples.flatMap((s) => Object.keys(s.rssMb)))];
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>rnnstream soak</title></head><body style="font-family:sans-serif">
<h1>rnnstream soak: ${minutes} min at ${rate} events/s, exactly once</h1>
<p id="verdict">${summary.events} events; lost ${summary.lost}; more than one output ${summary.duplicated}; RSS slope ${summary.rssSlopeMbPerHour.toFixed(1)} MB/h per instance; p99 latency median ${summary.p99Seconds.median} s, worst ${summary.p99Seconds.worst} s; max lag ${summary.maxLag}.</p>
${svgChart('RSS per instance (MB)', 'MB', names.map((name) => ({ name, points: samples.filter((s) => s.rssMb[name] !== undefined).map((s) => [s.t, s.rssMb[name]!] as [number, number]) })), marks, seconds)}
${svgChart('Consumer lag (records, all partitions)', 'records', [{ name: 'lag', points: samples.map((s) => [s.t, s.lag] as [number, number]) }], marks, seconds)}
${svgChart('End-to-end latency p99 per 5 s (s)', 's', [{ name: 'p99', points: samples.filter((s) => s.p99 !== undefined).map((s) => [s.t, s.p99!] as [number, number]) }], marks, seconds)}
<h2>Events</h2><ul>${marks.map((m) => `<li>${m.t.toFixed(0)} s: ${m.label}</li>`).join('')}</ul>
<script type="application/json" id="summary">${JSON.stringify(summary)}</script></body></html>`;
  writeFileSync(out, html);
  writeFileSync(out.replace(/\.html$/, '') + '.json', `${JSON.stringify({ summary, samples }, null, 1)}\n`);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  checkInChromium(out);
  process.exit(summary.lost === 0 && summary.duplicated === 0 ? 0 : 1);
}

/** Opens the page in headless Chromium and checks that its three charts rendered with data. */
function checkInChromium(html: string): void {
  const chromium = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
  if (!chromium) {
    process.stderr.write('no chromium: the page was not checked\n');
    return;
  }
  const profile = mkdtempSync(join(tmpdir(), 'rnnstream-soak-chrome-'));
  const dom = spawnSync(chromium, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 60_000 });
  const charts = (dom.stdout.match(/<svg class="chart"/g) ?? []).length;
  const lines = [...dom.stdout.matchAll(/<polyline[^>]*points="([^"]*)"/g)].filter((m) => m[1]!.split(' ').length > 2).length;
  if (dom.status !== 0 || charts !== 3 || lines < 3) throw new Error(`headless Chromium: ${charts} charts, ${lines} lines with data (status ${dom.status})`);
  process.stderr.write(`headless Chromium rendered ${out}: ${charts} charts, ${lines} lines with data\n`);
}

await main();
