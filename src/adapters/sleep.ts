/** Waiting: the one `sleep`, a sleep that can be cut short, and a deadline on a promise. */

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A timer that can be cut short: `wake()` resolves `done` at once (a retry wait on abort, an interval on shutdown). */
export function wakeableSleep(ms: number): { readonly done: Promise<void>; wake(): void } {
  let wake = (): void => {};
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
  return { done, wake };
}

/** `work`'s value, or 'timeout' if it takes longer than `ms`. */
export async function within<T>(ms: number, work: Promise<T>): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
