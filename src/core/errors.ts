/**
 * Errors that carry the context a user needs to act on them: which field or source
 * position was wrong and what was expected. Every error rnnstream throws on purpose is an
 * `RnnStreamError`, so callers can tell "your input is wrong" from "the program is wrong".
 */
export class RnnStreamError extends Error {
  override readonly name: string = 'RnnStreamError';
  /** True when retrying the same operation later may succeed (a broker outage, say). */
  readonly retriable: boolean;
  constructor(message: string, options: { cause?: unknown; retriable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retriable = options.retriable ?? false;
  }
}

/** A model file that is missing, not JSON, or inconsistent (shapes, sizes, labels). */
export class ModelFileError extends RnnStreamError {
  override readonly name = 'ModelFileError';
  constructor(
    readonly file: string,
    readonly issues: readonly string[],
  ) {
    super(`invalid model file ${file}:\n  - ${issues.join('\n  - ')}`);
  }
}

/** A backend that could not be created on this host; `reason` says why. */
export class BackendUnavailableError extends RnnStreamError {
  override readonly name = 'BackendUnavailableError';
  constructor(
    readonly backend: string,
    readonly reason: string,
    options: { cause?: unknown } = {},
  ) {
    super(`backend "${backend}" is unavailable: ${reason}`, options);
  }
}

/** Snapshot bytes that do not belong to this model or are corrupt. */
export class SnapshotError extends RnnStreamError {
  override readonly name = 'SnapshotError';
}

/** A caller pushed more events than the bounded queue admits. */
export class QueueOverflowError extends RnnStreamError {
  override readonly name = 'QueueOverflowError';
}

/** Bad command-line usage; the CLI prints the message and exits with code 2. */
export class UsageError extends RnnStreamError {
  override readonly name = 'UsageError';
}
