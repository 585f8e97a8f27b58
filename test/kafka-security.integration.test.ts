/**
 * TLS and SASL/SCRAM-SHA-512 on a real listener (the jar cluster's SASL_SSL port, with a CA and
 * a SCRAM user that scripts/kafka.mjs made): the service and `rnnstream produce` connect with
 * settings from a config file and the password from the environment; a wrong password is one
 * clear line and a non-zero exit; no password shows in logs, /metrics, /healthz, --help or errors.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { cli } from './support/cli.js';
import { ballHarness, type BallHarness } from './support/harness.js';
import { exited, freshTopics, httpAddressOf, spawnService, waitFor } from './support/kafka.js';

const saslBrokers = inject('kafkaSaslBrokers');
let h: BallHarness;
beforeAll(async () => {
  h = await ballHarness(8, 5);
}, 60_000);

function httpText(url: string): Promise<string> {
  return fetch(url, { headers: { connection: 'close' } }).then((r) => r.text());
}

describe.skipIf(!saslBrokers)('TLS + SASL/SCRAM-SHA-512 on a real listener', () => {
  it('service and produce connect with TLS and SCRAM from the config file and environment; a wrong password fails clearly; no secret leaks', async () => {
    const password = readFileSync(inject('kafkaSaslPasswordFile'), 'utf8').trim();
    const t = freshTopics('sasl');
    const config = join(h.dir, 'sasl.json');
    writeFileSync(
      config,
      JSON.stringify({
        ...t,
        pipeline: 'ball-direction',
        brokers: saslBrokers.split(','),
        ssl: { ca: inject('kafkaCaFile') },
        sasl: { mechanism: 'scram-sha-512', username: inject('kafkaSaslUsername') },
        http: { port: 0 },
        backend: 'onnx',
        // The most verbose level: whatever kafkajs or the service logs, none of it may hold the password.
        logLevel: 'trace',
      }),
    );
    const env = { RNNSTREAM_SASL_PASSWORD: password };
    const produced = cli(['produce', '--pipeline', 'ball-direction', '--config', config, '--input', h.fixture, '--topic', t.inputTopic], env);
    expect(produced.code, produced.stderr).toBe(0);

    const service = spawnService(['--config', config], env);
    let scraped = '';
    try {
      const http = await httpAddressOf(service);
      // Read back over the plain listener of the same cluster: what went in over TLS is all there.
      await waitFor('every event to have a prediction', async () => (await h.distinctPredictions(t)) === h.events, 90_000);
      scraped = (await httpText(`${http}/metrics`)) + (await httpText(`${http}/healthz`));
    } finally {
      service.kill('SIGTERM');
      expect(await exited(service)).toBe(0);
    }
    await h.expectOutputEqualsReplay(t);
    expect(scraped).toContain('rnnstream_predictions_out_total');

    const wrong = `wrong-${randomBytes(9).toString('base64url')}`;
    const denied = cli(['run', '--config', config], { RNNSTREAM_SASL_PASSWORD: wrong });
    expect(denied.code).toBe(1);
    // The log lines are JSON (kafkajs may still log its clients' goodbyes after the verdict);
    // the verdict is the one plain line.
    const plain = denied.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
    expect(plain).toHaveLength(1);
    const lastLine = plain[0]!;
    expect(lastLine).toMatch(/^rnnstream: Kafka authentication failed: .*SCRAM/);
    expect(denied.stderr).not.toMatch(/\n\s+at /); // no stack trace
    process.stderr.write(`wrong password: ${lastLine}\n`);

    const help = cli(['run', '--help'], env).stdout + cli(['produce', '--help'], env).stdout;
    for (const [where, text] of Object.entries({ 'service log': service.output(), 'produce output': produced.stdout + produced.stderr, '/metrics and /healthz': scraped, '--help': help, 'the failed run': denied.stderr })) {
      expect(text.includes(password), `the password appears in ${where}`).toBe(false);
      expect(text.includes(wrong), `the wrong password appears in ${where}`).toBe(false);
    }
  }, 240_000);
});
