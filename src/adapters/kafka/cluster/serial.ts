/**
 * Runs async calls one after another. kafkajs's admin client keeps one metadata cache that
 * overlapping calls refresh under each other: two fetchTopicOffsets at once (the restores of two
 * partitions) saw an empty partition list and failed with "Cannot destructure property
 * 'partitions' of 'high.pop(...)'", found by the exactly-once kill test.
 */
export type Serial = <T>(work: () => Promise<T>) => Promise<T>;

export function createSerial(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(work: () => Promise<T>): Promise<T> => {
    const run = tail.then(work, work);
    tail = run.catch(() => undefined);
    return run;
  };
}
