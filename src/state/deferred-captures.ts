/**
 * Changelog captures whose state stays on the device until the changelog writes it.
 *
 * Under at-least-once and exactly-once, each prediction carries its key's state right after it
 * (a capture), and the sink writes the latest acknowledged capture per key at the commit
 * interval. With keys' state on a device (the backend's slot table), reading every row's state
 * back per micro-batch would move every event's state across the bus while the changelog writes
 * one per key per interval. So each micro-batch's every-row states stay on the device (a kept
 * block, KeptStates) and a capture is a row of one: `resolveCaptures`, called by the sink just
 * before it encodes a changelog batch, reads the rows it will write, from every block at once,
 * in one read-back. A capture the sink replaces with a newer one of its key, or drops, is
 * `dropCapture`d; a block whose captures are all resolved or dropped is freed on the device.
 *
 * A block nobody resolves or drops (a sink that never writes state, a partition revoked with its
 * transaction) must not hold device memory for ever: past `budgetBytes` of live blocks, the
 * oldest is read back whole and freed on the device (counted in `spilledBlocks`), and its
 * captures read from that host copy. A capture read before it is resolved is resolved alone,
 * synchronously where the device reads synchronously, else with an error that says to await
 * resolveCaptures first. Every path yields the same bytes as the host's states would.
 */
import type { StateSegment } from '../core/model.js';
import { LazyStateSnapshot } from './lazy-snapshot.js';
import type { KeySnapshot } from './snapshot-codec.js';

/** A micro-batch's every-row states kept on the device (the backend's KeptStates). */
export interface KeptStatesHandle {
  readonly rows: number;
  readonly bytes: number;
  release(): void;
}

/** What reads kept rows back: the backend's state table (DeviceStateTable.readKept). */
export interface KeptStatesReader {
  readKept(parts: readonly { readonly kept: KeptStatesHandle; readonly rows: Int32Array }[], into: Float32Array): void | Promise<void>;
}

/** Live kept blocks held on the device, at most, by default before the oldest is read back whole. */
export const DEFAULT_KEPT_BUDGET_BYTES = 256 * 2 ** 20;

/** One micro-batch's kept states and the captures still to be read from it. */
class KeptBlock {
  /** Captures of this block not yet resolved or dropped. */
  refs = 0;
  /** Resolves in flight that read from it (a spill waits for none; it skips such a block). */
  reading = 0;
  /** After a spill: every row's state, segment-major for `rows` rows. */
  host: Float32Array | undefined;
  spilling: Promise<void> | undefined;

  constructor(
    public kept: KeptStatesHandle | undefined,
    readonly rows: number,
    readonly bytes: number,
  ) {}
}

/** A key's state right after one step, its floats in a kept block until resolved (see module doc). */
export class DeferredCapture extends LazyStateSnapshot {
  private floats: Float32Array | undefined;
  /** Let go unread (dropCapture): its block may be freed. */
  dropped = false;
  /** Its read, while one is in flight (an asynchronous device). */
  reading: Promise<void> | undefined;

  constructor(
    readonly ledger: CaptureLedger,
    readonly block: KeptBlock,
    /** Its row in the block (the micro-batch's input row of the event). */
    readonly row: number,
    meta: Omit<KeySnapshot, 'state'>,
  ) {
    super(meta);
  }

  get resolved(): boolean {
    return this.floats !== undefined;
  }

  get state(): Float32Array {
    if (this.dropped && !this.floats) throw new Error(`the captured state of key "${this.key}" was dropped unread`);
    if (!this.floats) this.ledger.resolveNow(this);
    return this.floats!;
  }

  /** The ledger's: the floats read back. */
  settle(floats: Float32Array): void {
    this.floats = floats;
  }
}

export interface CaptureLedgerStats {
  /** Kept blocks made (one per micro-batch). */
  readonly blocks: number;
  /** Bytes of kept blocks live on the device now. */
  readonly liveBytes: number;
  /** Rows read back for resolved captures. */
  readonly rowsRead: number;
  /** Read-backs made by resolves. */
  readonly reads: number;
  /** Blocks read back whole because the budget was full. */
  readonly spilledBlocks: number;
}

export class CaptureLedger {
  /** Blocks with device memory, oldest first. */
  private readonly live: KeptBlock[] = [];
  private counts = { blocks: 0, liveBytes: 0, rowsRead: 0, reads: 0, spilledBlocks: 0 };
  /** Bytes of blocks whose spill is in flight (an asynchronous device): already on their way out. */
  private spillingBytes = 0;

  constructor(
    private readonly reader: KeptStatesReader,
    private readonly segments: readonly StateSegment[],
    private readonly stateSize: number,
    private readonly budgetBytes = DEFAULT_KEPT_BUDGET_BYTES,
    /** Told of each block read back whole because the budget was full (a fallback: count it). */
    private readonly onSpill: (bytes: number) => void = () => {},
  ) {}

  get stats(): CaptureLedgerStats {
    return { ...this.counts };
  }

  /** Takes a micro-batch's kept states; its captures are made with `capture`. */
  block(kept: KeptStatesHandle): KeptBlock {
    const block = new KeptBlock(kept, kept.rows, kept.bytes);
    this.live.push(block);
    this.counts.blocks++;
    this.counts.liveBytes += block.bytes;
    this.keepWithinBudget();
    return block;
  }

  capture(block: KeptBlock, row: number, meta: Omit<KeySnapshot, 'state'>): DeferredCapture {
    block.refs++;
    return new DeferredCapture(this, block, row, meta);
  }

  /** A capture nobody will read (replaced by a newer one of its key, or dropped). */
  drop(c: DeferredCapture): void {
    if (c.resolved || c.dropped) return;
    c.dropped = true;
    this.unref(c.block);
  }

  /**
   * Reads the given captures' floats: those in device blocks in one read-back (all blocks
   * gathered on the device), those in spilled blocks from the host copy.
   */
  resolve(captures: readonly DeferredCapture[]): void | Promise<void> {
    const open = captures.filter((c) => !c.resolved && !c.dropped);
    // Captures whose read is in flight are waited for, not read again.
    const inFlight = [...new Set(open.map((c) => c.reading).filter((p) => p !== undefined))];
    const started = this.startReads([...new Set(open.filter((c) => !c.reading))]);
    if (inFlight.length === 0) return started;
    return Promise.all([...inFlight, started]).then(() => undefined);
  }

  private startReads(todo: readonly DeferredCapture[]): void | Promise<void> {
    const spilling = [...new Set(todo.map((c) => c.block.spilling).filter((p) => p !== undefined))];
    if (spilling.length > 0) return Promise.all(spilling).then(() => this.startReads(todo));
    const onDevice = new Map<KeptBlock, DeferredCapture[]>();
    for (const c of todo) {
      if (c.block.host) this.land(c, c.block.host, c.block.rows, c.row);
      else {
        const list = onDevice.get(c.block);
        if (list) list.push(c);
        else onDevice.set(c.block, [c]);
      }
    }
    if (onDevice.size === 0) return undefined;
    const order = [...onDevice].flatMap(([, list]) => list);
    const parts = [...onDevice].map(([block, list]) => ({ kept: block.kept!, rows: Int32Array.from(list, (c) => c.row) }));
    const into = new Float32Array(order.length * this.stateSize);
    for (const block of onDevice.keys()) block.reading++;
    const finish = (): void => {
      for (const block of onDevice.keys()) block.reading--;
    };
    const landAll = (): void => {
      finish();
      this.counts.reads++;
      this.counts.rowsRead += order.length;
      order.forEach((c, i) => this.land(c, into, order.length, i));
    };
    let pending: void | Promise<void>;
    try {
      pending = this.reader.readKept(parts, into);
    } catch (err) {
      finish();
      throw err;
    }
    if (pending) {
      const read = pending.then(
        () => {
          for (const c of order) c.reading = undefined;
          landAll();
        },
        (err: unknown) => {
          for (const c of order) c.reading = undefined;
          finish();
          throw err;
        },
      );
      for (const c of order) c.reading = read;
      return read;
    }
    landAll();
    return undefined;
  }

  /** One capture's floats now, for a read before its resolve: synchronous devices only. */
  resolveNow(c: DeferredCapture): void {
    const pending = this.resolve([c]);
    if (pending) {
      pending.catch(() => undefined);
      throw new Error("this captured state is on the device, which reads back asynchronously: await resolveCaptures() before reading it");
    }
  }

  /** Row `row` of a segment-major block of `rows` rows as the capture's floats; its block loses a reader. */
  private land(c: DeferredCapture, block: Float32Array, rows: number, row: number): void {
    if (c.resolved) return;
    const floats = new Float32Array(this.stateSize);
    for (const seg of this.segments) floats.set(block.subarray(rows * seg.offset + row * seg.size, rows * seg.offset + (row + 1) * seg.size), seg.offset);
    c.settle(floats);
    this.unref(c.block);
  }

  private unref(block: KeptBlock): void {
    // A block being spilled is freed when its read lands, not under it.
    if (--block.refs > 0 || block.spilling) return;
    this.free(block);
    block.host = undefined;
  }

  /** Frees a block's device memory (once). */
  private free(block: KeptBlock): void {
    if (!block.kept) return;
    block.kept.release();
    block.kept = undefined;
    this.counts.liveBytes -= block.bytes;
    const at = this.live.indexOf(block);
    if (at >= 0) this.live.splice(at, 1);
  }

  /** Past the budget, the oldest blocks (not the newest, nor one being read) are read back whole and freed on the device. */
  private keepWithinBudget(): void {
    for (let i = 0; i < this.live.length - 1 && this.counts.liveBytes - this.spillingBytes > this.budgetBytes; i++) {
      const block = this.live[i]!;
      if (block.spilling || block.reading > 0) continue;
      this.spill(block);
      // A synchronous spill took it out of `live`.
      if (this.live[i] !== block) i--;
    }
  }

  private spill(block: KeptBlock): void {
    const into = new Float32Array(block.rows * this.stateSize);
    const land = (): void => {
      if (block.spilling) this.spillingBytes -= block.bytes;
      block.spilling = undefined;
      block.host = into;
      this.free(block);
      this.counts.spilledBlocks++;
      this.onSpill(block.bytes);
    };
    const pending = this.reader.readKept([{ kept: block.kept!, rows: Int32Array.from({ length: block.rows }, (_, r) => r) }], into);
    if (pending) {
      this.spillingBytes += block.bytes;
      block.spilling = pending.then(land);
    } else land();
  }
}

/**
 * Reads every deferred capture among `snapshots` (others are already floats): one read-back per
 * device, before a changelog batch is encoded.
 */
export async function resolveCaptures(snapshots: Iterable<KeySnapshot | undefined>): Promise<void> {
  const byLedger = new Map<CaptureLedger, DeferredCapture[]>();
  for (const s of snapshots) {
    if (!(s instanceof DeferredCapture) || s.resolved) continue;
    const list = byLedger.get(s.ledger);
    if (list) list.push(s);
    else byLedger.set(s.ledger, [s]);
  }
  for (const [ledger, list] of byLedger) await ledger.resolve(list);
}

/** Lets a capture go unread (the sink replaced it with a newer one of its key, or dropped it). */
export function dropCapture(s: KeySnapshot | undefined): void {
  if (s instanceof DeferredCapture) s.ledger.drop(s);
}
