/**
 * The fixes rnnstream needs in kafkajs 2.2.4 (patches/kafkajs+2.2.4.patch, applied by npm's
 * postinstall in this repository), checked in the kafkajs that is actually loaded. Installed as
 * someone else's dependency (node_modules hoisted, patch-package absent), the patch is not
 * applied, and exactly once would run without the fix that keeps a retried produce request from
 * writing records twice. So that is refused at start-up, with what to do; the other fix is speed
 * only, and its absence is logged.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { RnnStreamError } from '../../../core/errors.js';
import type { Logger } from '../../../observability/logger.js';

export interface KafkajsFix {
  /** The kafkajs file it changes. */
  readonly file: string;
  /** What the service loses without it. */
  readonly without: string;
  /** Whether exactly once is correct without it. */
  readonly neededForExactlyOnce: boolean;
  /** Lines the fixed file has and kafkajs 2.2.4's does not. */
  readonly markers: readonly string[];
}

export const KAFKAJS_FIXES: readonly KafkajsFix[] = Object.freeze([
  {
    file: 'kafkajs/src/producer/sendMessages.js',
    without: 'a produce request retried while another broker part was in flight can write its records twice inside a transaction',
    neededForExactlyOnce: true,
    markers: ['await Promise.allSettled(requests)', 'if (responsePerBroker.get(broker)) return', 'await eosManager.addPartitionsToTransaction(allTopicData)'],
  },
  {
    file: 'kafkajs/src/producer/groupMessagesPerPartition.js',
    without: 'grouping a produce request by partition is quadratic (20-30 % of the producer thread at 5,000-record requests)',
    neededForExactlyOnce: false,
    markers: ['rnnstream patch'],
  },
]);

export interface MissingFix extends KafkajsFix {
  /** Where the loaded kafkajs file is. */
  readonly path: string;
}

/** The fixes the loaded kafkajs lacks (`read` is for tests). */
export function missingKafkajsFixes(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): MissingFix[] {
  const require = createRequire(import.meta.url);
  return KAFKAJS_FIXES.flatMap((fix) => {
    const path = require.resolve(fix.file);
    const source = read(path);
    return fix.markers.every((m) => source.includes(m)) ? [] : [{ ...fix, path }];
  });
}

/** How to apply the fixes where rnnstream is a dependency. */
export const APPLY_KAFKAJS_FIXES =
  'apply rnnstream\'s patch to the kafkajs your install loads (from your project: npx patch-package --patch-dir node_modules/rnnstream/patches), or run at-least-once';

/** Refuses exactly once on a kafkajs without the fix it needs; logs a missing speed fix. */
export function checkKafkajsFixes(parts: { guarantee: 'at-least-once' | 'exactly-once'; logger: Logger; missing?: readonly MissingFix[] }): void {
  for (const fix of parts.missing ?? missingKafkajsFixes()) {
    if (fix.neededForExactlyOnce && parts.guarantee === 'exactly-once') {
      throw new RnnStreamError(`exactly-once needs rnnstream's fix to kafkajs 2.2.4 in ${fix.path}, which this install lacks (without it ${fix.without}): ${APPLY_KAFKAJS_FIXES}`);
    }
    parts.logger.warn({ file: fix.path, without: fix.without }, "kafkajs runs without one of rnnstream's fixes (patches/kafkajs+2.2.4.patch)");
  }
}
