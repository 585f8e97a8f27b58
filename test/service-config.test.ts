import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { resolveServiceConfig } from '../src/service/config.js';
import { cli } from './support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'rnnstream-config-'));

describe('service configuration', () => {
  it('layers defaults < config file < RNNSTREAM_* environment < command line', () => {
    const file = join(dir, 'c.json');
    writeFileSync(file, JSON.stringify({ pipeline: 'ball-direction', brokers: ['file:9092'], group: 'from-file', maxBatchSize: 64, http: { port: 9000 } }));
    const { config } = resolveServiceConfig({
      file,
      env: { RNNSTREAM_GROUP: 'from-env', RNNSTREAM_HTTP_HOST: '0.0.0.0' },
      flags: { brokers: ['flag:9092', 'flag2:9093'] },
    });
    expect(config.brokers).toEqual(['flag:9092', 'flag2:9093']);
    expect(config.group).toBe('from-env');
    expect(config.maxBatchSize).toBe(64);
    expect(config.http).toEqual({ host: '0.0.0.0', port: 9000 });
    expect(config.inputTopic).toBe('ball-direction.input');
    expect(config.changelogTopic).toBe('ball-direction.changelog');
  });

  it('merges TLS settings field by field: a CA from the file, TLS switched on or off above it', () => {
    const file = join(dir, 'tls.json');
    writeFileSync(file, JSON.stringify({ pipeline: 'ball-direction', brokers: ['k:9093'], ssl: { ca: '/etc/ca.pem', rejectUnauthorized: false } }));
    const base = { pipeline: 'ball-direction', brokers: ['k:9093'] };
    expect(resolveServiceConfig({ env: {}, flags: base }).config.ssl).toEqual({ enabled: false, rejectUnauthorized: true });
    // An object without `enabled` means TLS on; --ssl on top keeps the file's CA.
    expect(resolveServiceConfig({ file, env: {}, flags: { ssl: { enabled: true } } }).config.ssl).toEqual({ enabled: true, ca: '/etc/ca.pem', rejectUnauthorized: false });
    expect(resolveServiceConfig({ file, env: { RNNSTREAM_SSL: 'false' } }).config.ssl.enabled).toBe(false);
    // `ssl: true` in a file is short for { enabled: true }; a CA from the environment joins it.
    writeFileSync(file, JSON.stringify({ ...base, ssl: true }));
    expect(resolveServiceConfig({ file, env: { RNNSTREAM_SSL_CA: '/run/ca.pem' } }).config.ssl).toEqual({ enabled: true, ca: '/run/ca.pem', rejectUnauthorized: true });
    writeFileSync(file, JSON.stringify({ ...base, ssl: { verify: false } }));
    expect(() => resolveServiceConfig({ file, env: {} })).toThrow(/ssl \(from config file .*\): Unrecognized key: "verify"/);
  });

  it('never quotes a file that is not JSON (a password file given as --config): line, column, what was expected', () => {
    const file = join(dir, 'password');
    writeFileSync(file, 'PW-S3cr3t-4242\n');
    expect(() => resolveServiceConfig({ file, env: {} })).toThrow(/is not valid JSON: line 1, column 1: unexpected character$/);
    expect(() => resolveServiceConfig({ file, env: {} })).not.toThrow(/S3cr3t|PW-/);
    writeFileSync(file, '{\n  "pipeline": "ball-direction",\n  "brokers": [k:9092]\n}');
    expect(() => resolveServiceConfig({ file, env: {} })).toThrow(/line 3, column 15: unexpected character$/);
  });

  it('attributes an unknown key to the layer that has it', () => {
    const file = join(dir, 'unknown.json');
    writeFileSync(file, JSON.stringify({ pipeline: 'ball-direction', brokers: ['k:9092'], http: { prot: 1 } }));
    expect(() => resolveServiceConfig({ file, env: {}, flags: { group: 'g' } })).toThrow(/http \(from config file .*unknown\.json\): Unrecognized key: "prot"/);
  });

  it('binds the HTTP endpoint to 127.0.0.1 unless told otherwise', () => {
    const { config } = resolveServiceConfig({ env: {}, flags: { pipeline: 'stock-moves', brokers: ['k:9092'] } });
    expect(config.http.host).toBe('127.0.0.1');
    expect(config.group).toBe('rnnstream-stock-moves');
  });

  it('names each bad value, what was expected and where it came from', () => {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ pipeline: 'ball-direction', maxBatchSize: 0 }));
    expect(() => resolveServiceConfig({ file, env: { RNNSTREAM_BROKERS: 'no-port' }, flags: { backend: 'tpu' } })).toThrow(
      /brokers\[0\] \(from environment \(RNNSTREAM_\*\)\): expected host:port[\s\S]*backend \(from command line\): Invalid option[\s\S]*maxBatchSize \(from config file .*bad\.json\): Too small/,
    );
  });

  it('reads the SASL password from the environment or a file and never echoes it', () => {
    const flags = { pipeline: 'ball-direction', brokers: ['k:9092'], sasl: { mechanism: 'scram-sha-512', username: 'svc' } };
    expect(resolveServiceConfig({ env: { RNNSTREAM_SASL_PASSWORD: 's3cret!' }, flags }).saslPassword).toBe('s3cret!');
    const pw = join(dir, 'pw');
    writeFileSync(pw, 'from-file\n');
    expect(resolveServiceConfig({ env: {}, flags: { ...flags, sasl: { ...flags.sasl, passwordFile: pw } } }).saslPassword).toBe('from-file');
    expect(() => resolveServiceConfig({ env: {}, flags })).toThrow(/a password is required: set RNNSTREAM_SASL_PASSWORD or sasl.passwordFile/);
    const resolved = resolveServiceConfig({ env: { RNNSTREAM_SASL_PASSWORD: 's3cret!' }, flags });
    expect(JSON.stringify(resolved.config)).not.toContain('s3cret!');
    // A bad value elsewhere must not print the secret either.
    try {
      resolveServiceConfig({ env: { RNNSTREAM_SASL_PASSWORD: 's3cret!' }, flags: { ...flags, maxBatchSize: -1 } });
    } catch (err) {
      expect((err as Error).message).not.toContain('s3cret!');
    }
  });

  it('rnnstream run exits 2 on bad configuration, naming the field', () => {
    const r = cli(['run', '--pipeline', 'ball-direction', '--brokers', 'nohost'], { RNNSTREAM_SASL_PASSWORD: 'zzz-secret' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('brokers[0] (from command line): expected host:port');
    expect(r.stderr).not.toContain('zzz-secret');
  });
});
