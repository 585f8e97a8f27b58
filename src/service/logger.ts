/** Structured JSON logs for the service (pino), to stderr, with secrets redacted. */
import { pino } from 'pino';
import type { Logger } from '../observability/logger.js';

export function createServiceLogger(level: string): Logger {
  const log = pino(
    {
      level,
      base: { service: 'rnnstream' },
      redact: { paths: ['password', '*.password', 'sasl.password', 'saslPassword'], censor: '[redacted]' },
    },
    pino.destination(2),
  );
  return {
    debug: (f, m) => log.debug(f, m),
    info: (f, m) => log.info(f, m),
    warn: (f, m) => log.warn(f, m),
    error: (f, m) => log.error(f, m),
  };
}
