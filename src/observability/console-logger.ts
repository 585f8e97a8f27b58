import type { Logger } from './logger.js';

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 } as const;
export type LogLevel = keyof typeof LEVELS;

/** Human-readable one-line logs on stderr for the CLI: `warn backend fallback backend=gpu reason="..."`. */
export function consoleLogger(level: LogLevel = 'warn', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const at =
    (l: LogLevel) =>
    (fields: object, message?: string): void => {
      if (LEVELS[l] < LEVELS[level]) return;
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined && !(Array.isArray(v) && v.length === 0))
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ');
      write(`${l} ${message ?? ''}${kv ? ' ' + kv : ''}`);
    };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
