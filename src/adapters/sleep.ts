/** Waiting: the one `sleep`, and a sleep that can be cut short. */

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
