/** The command line's shared option parsers and option groups. */
import { Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import { parseNumberText } from '../core/validation.js';

export const positiveInt = (name: string) => (value: string): number => {
  const n = parseNumberText(value, false);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got "${value}"`);
  return n;
};
export const positiveNumber = (name: string) => (value: string): number => {
  const n = parseNumberText(value, true);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${name} must be a positive number, got "${value}"`);
  return n;
};
export const fraction = (name: string) => (value: string): number => {
  const n = parseNumberText(value, true);
  if (!Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError(`${name} must be a number from 0 to below 1, got "${value}"`);
  return n;
};
export const probability = (name: string) => (value: string): number => {
  const n = parseNumberText(value, true);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`${name} must be a probability from 0 to 1, got "${value}"`);
  return n;
};
export const nonNegativeInt = (name: string) => (value: string): number => {
  const n = parseNumberText(value, false);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative integer, got "${value}"`);
  return n;
};

/** `A:B` (or one number for both) as a closed range within [lo, hi]. */
export const rangeOf = (name: string, lo: number, hi: number) => (value: string): { min: number; max: number } => {
  const parts = value.split(':');
  const [min, max] = parts.length === 1 ? [parseNumberText(parts[0]!, true), parseNumberText(parts[0]!, true)] : parts.map((p) => parseNumberText(p, true));
  if (parts.length > 2 || !Number.isFinite(min) || !Number.isFinite(max) || min! > max! || min! < lo || max! > hi) {
    throw new InvalidArgumentError(`${name} must be A:B with ${lo} <= A <= B <= ${hi}, got "${value}"`);
  }
  return { min: min!, max: max! };
};

export function progressBar(enabled: boolean) {
  if (!enabled) return undefined;
  const bar = new cliProgress.SingleBar(
    { format: 'replay |{bar}| {percentage}% {value}/{total} MB', stream: process.stderr, hideCursor: true, clearOnComplete: true },
    cliProgress.Presets.shades_classic,
  );
  const mb = (b: number): number => Number((b / 1e6).toFixed(1));
  return {
    start: (total: number) => bar.start(mb(total), 0),
    update: (bytes: number) => bar.update(mb(bytes)),
    stop: () => bar.stop(),
  };
}

/** TLS and SASL options, the same on every command that connects to Kafka. */
export function addSecurityOptions(command: Command): Command {
  return command
    .option('--ssl', 'connect to the brokers over TLS')
    .option('--ssl-ca <file.pem>', "CA certificate(s) to trust for the brokers' TLS certificates (implies --ssl)")
    .option('--sasl-mechanism <mechanism>', 'plain, scram-sha-256 or scram-sha-512')
    .option('--sasl-username <user>', 'SASL user name (the password comes from RNNSTREAM_SASL_PASSWORD or --sasl-password-file)')
    .option('--sasl-password-file <file>', 'file whose first line is the SASL password');
}

/** The security part of the configuration flags; absent options stay undefined (config file and env then apply). */
export function securityFlags(opts: { ssl?: boolean; sslCa?: string; saslMechanism?: string; saslUsername?: string; saslPasswordFile?: string }): Record<string, unknown> {
  return {
    ssl: opts.sslCa ? { enabled: true, ca: opts.sslCa } : opts.ssl ? { enabled: true } : undefined,
    sasl:
      opts.saslMechanism || opts.saslUsername || opts.saslPasswordFile
        ? { mechanism: opts.saslMechanism, username: opts.saslUsername, passwordFile: opts.saslPasswordFile }
        : undefined,
  };
}
