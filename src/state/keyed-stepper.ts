/**
 * The keyed stepping engine: what rnnByKey runs on each micro-batch it cuts. For every event it
 * finds the key's slot in the store, checks its sequence, computes its features from what the key
 * carries, steps the model for every key of a wave in one backend call (or the whole micro-batch
 * in one, on a device), writes the key's state back (on the host or in the device's slot table)
 * and says what came of the event, in input order. No RxJS here: the operator does batching,
 * ordering and backpressure (operators/rnn-by-key.ts).
 */
import { FROM_TABLE, FROM_ZEROS, waveStarts, type DeviceStateTable, type KeptStates, type MicroBatch, type SlotMicroBatch, type StepBackend } from '../backends/types.js';
import { CaptureLedger } from './deferred-captures.js';
import { WaveStateCapture, type WaveStates } from './lazy-snapshot.js';
import type { Carried } from '../pipeline/define.js';
import { argmax } from '../core/cells.js';
import { RnnStreamError } from '../core/errors.js';
import { CHUNK_SLOTS, Residence, type KeySnapshot, type KeyStateStore, type StatePosition } from './key-state-store.js';
import { FrameStepper, type FrameSteps } from './frame-stepper.js';
import { sequenceVerdict, type SequenceRule } from './sequence-verdict.js';
import type { WarmHistory } from './warm-history.js';

/** What the stepper needs: the model's backend and store, and how items become keyed events. */
export interface KeyedStepConfig<In, E> {
  readonly backend: StepBackend;
  readonly store: KeyStateStore;
  /** The item's key, or undefined to pass the item through unstepped (e.g. a dead letter). */
  readonly keyOf: (item: In) => string | undefined;
  /** The event in a keyed item (the input of `features`). */
  readonly eventOf: (item: In) => E;
  /** Stored with the key's state after the step (an input partition and offset), for restores. */
  readonly positionOf?: (item: In) => StatePosition | undefined;
  /** Writes the model's raw features for `event`, given what its key remembers of its last event, into `out`. */
  readonly features: (event: E, prev: Carried | undefined, out: Float64Array) => void;
  /**
   * What a key remembers of each applied event (the store's carry columns, in this order; the
   * store's carrySize must match): the `prev` of its next event's features.
   */
  readonly carry?: Readonly<Record<string, (event: E) => number>>;
  /** True for a key's last event: its state is freed right after the step (the step says `ended`). */
  readonly ends?: (event: E) => boolean;
  /** Remember each key's predicted class (argmax of the output), for prequential scoring. */
  readonly classify?: boolean;
  /**
   * Attach to each step the key's state right after it (for a changelog that must match the
   * outputs it is written with). Off by default: replay does not need it.
   */
  readonly captureState?: boolean;
  /**
   * Per-key order: an event whose sequence number is not greater than that of the key's last
   * applied event (kept in the store, in snapshots and the changelog, so the check holds across
   * restores) is rejected, not stepped. With `consecutive`, a jump of more than one counts as a
   * gap; with `first`, a key's first event must carry that number.
   */
  readonly sequence?: SequenceRule<E>;
  /**
   * Step each micro-batch's waves in one backend call (`stepMicroBatch`: one upload, one
   * read-back) rather than one call per wave. Default: on for device backends that have it,
   * where each call is a round trip; host backends step wave by wave, which costs them less.
   */
  readonly microBatch?: boolean;
  /**
   * With the micro-batch path: keep every key's state on the device, in the backend's slot
   * table (`stateTable`), so that only slot numbers and inputs go up and outputs come down.
   * Default: on where the backend has a table and the store fits it (see stateResidence).
   */
  readonly stateOnDevice?: boolean;
  /**
   * Told when a micro-batch's kept states (captureState with state on the device) were read back
   * whole because too many were held on the device unread: a fallback that costs bytes, counted.
   */
  readonly onKeptStatesSpilled?: (bytes: number) => void;
  /** Called once per micro-batch with its events and waves (replay's transfer figures per micro-batch). */
  readonly onBatch?: (events: number, waves: number) => void;
  /**
   * Events that are several model steps each, with pipeline state of their own per key (audio
   * chunks: see frame-stepper.ts). `features` and `carry` are then not used; the carry columns
   * hold the pipeline state. Stepped wave by wave from the host's columns.
   */
  readonly frames?: FrameSteps<E>;
  /**
   * Keep each key's last events' raw features in its carry, after the pipeline's own values
   * (hot swap, policy `warm`): a key the store marks cold (its state made by an earlier model)
   * is first warmed up, its history stepped through the model served now, in batches across the
   * cold keys of the micro-batch. Not with `frames`.
   */
  readonly history?: WarmHistory;
  /** Called after each warm-up with the keys warmed, the history events stepped and the milliseconds it took. */
  readonly onWarmUp?: (keys: number, events: number, ms: number) => void;
}

/** The result for one input item, emitted in input order. */
export type KeyedStep<In> =
  | {
      readonly kind: 'step';
      readonly item: In;
      readonly key: string;
      /** 1-based index of this event in the key's state history (restarts after eviction). */
      readonly seq: number;
      /** Head output: probabilities (softmax) or values (linear). */
      readonly output: Float32Array;
      /** The index of the largest output (a softmax head's class); -1 for a frames pipeline's step. */
      readonly best: number;
      /** What the key remembered of its previous event (before this one), if it had one. */
      readonly prev: Carried | undefined;
      /** The key's state after this step, when `captureState` is on. */
      readonly captured?: KeySnapshot;
      /** Sequence numbers skipped right before this event (a consecutive `sequence` only; else 0). */
      readonly gap: number;
      /** This was the key's last event (`ends`): its state is gone from the store. */
      readonly ended: boolean;
      /** With `classify`: the class the key's previous step predicted (-1: none). */
      readonly previousClass: number;
      /** With `frames`: how many model steps the event gave (`output` holds one row per step). */
      readonly rows?: number;
      /** With `frames`: what the pipeline's decoder made of the event (its partial transcript). */
      readonly decoded?: unknown;
      /** With `history`: whether the key has seen its history's length of events under the model served (undefined without). */
      readonly warm?: boolean | undefined;
    }
  | { readonly kind: 'rejected'; readonly item: In; readonly key: string; readonly reason: string }
  | { readonly kind: 'passthrough'; readonly item: In };

/** One accepted event of a micro-batch (the micro-batch path), with what its key held right after it. */
interface ChainRow {
  /** Its item's index. */
  readonly i: number;
  /** Its features' row in the staging buffer. */
  readonly staged: number;
  readonly gap: number;
  readonly prev: Carried | undefined;
  readonly steps: number;
  readonly position: StatePosition | undefined;
  readonly sequence: number;
  /** What its key remembered right after it (captureState only). */
  readonly carry: Float64Array | undefined;
  /** With a history: whether its key was warm right after it. */
  readonly warm: boolean | undefined;
}

/** A key's accepted events in a micro-batch, in order, and its state before the first. */
interface Chain {
  readonly slot: number;
  /** Its state before the micro-batch, when the device's table does not hold it (undefined: zeros). */
  readonly initial: Float32Array | undefined;
  /** Its state before the micro-batch is in its slot of the device's table. */
  readonly inTable: boolean;
  readonly rows: ChainRow[];
}

/**
 * Whether rnnByKey sends `backend` whole micro-batches (see KeyedStepConfig.microBatch): by
 * default a device backend, and a host backend that steps them as sequences where no row's state
 * is kept (`sequenceMicroBatch`).
 */
export const microBatchPath = (backend: StepBackend, options: { microBatch?: boolean; frames?: unknown; captureState?: boolean }): boolean =>
  options.frames === undefined && backend.stepMicroBatch !== undefined && (options.microBatch ?? (backend.device === true || (backend.sequenceMicroBatch === true && options.captureState !== true)));

/**
 * Whether rnnByKey keeps keys' state on `backend`'s device (its slot table) for `store`, and why
 * (or why not): what replay reports beside its transfer figures.
 */
export function stateResidence(backend: StepBackend, store: KeyStateStore, options: { microBatch?: boolean; stateOnDevice?: boolean; frames?: unknown }): { table: DeviceStateTable | undefined; why: string } {
  const table = backend.stateTable;
  if (!table) return { table: undefined, why: `the ${backend.name} backend keeps no state table` };
  if (options.frames !== undefined) return { table: undefined, why: 'the pipeline steps frames (several per event), wave by wave from the host' };
  if (!microBatchPath(backend, options)) return { table: undefined, why: 'the micro-batch path is off' };
  if (options.stateOnDevice === false) return { table: undefined, why: 'turned off (stateOnDevice: false)' };
  if (store.capacity > table.maxSlots) return { table: undefined, why: `the store's capacity (${store.capacity} keys) exceeds the device's ${table.maxSlots}-slot table` };
  return { table, why: `every key's state in the ${backend.name} backend's slot table` };
}

/**
 * Steps one micro-batch in waves: per event, the key's slot, the sequence check, the features,
 * what the key carries, the step, the output and the key's state after it (captured for a
 * changelog when asked). Holds the batch buffers, sized once for maxBatchSize keys. `now` is the
 * time source of the store's idle TTL (the operator's scheduler).
 */
export class KeyedStepper<In, E> {
  readonly input: Float32Array;
  readonly state: Float32Array;
  readonly next: Float32Array;
  readonly output: Float32Array;
  private readonly raw: Float64Array;
  private readonly carryNames: readonly string[];
  private readonly carryOf: readonly ((event: E) => number)[];
  /** Whether micro-batches go to the backend whole (see KeyedStepConfig.microBatch). */
  private readonly microBatch: boolean;
  /** Accepted events' normalised features in a micro-batch, before they are ordered into waves. */
  private readonly staged: Float32Array;
  /** The device's slot table, where keys' state lives (see KeyedStepConfig.stateOnDevice). */
  private readonly table: DeviceStateTable | undefined;
  /** With the table and captureState: captures whose state stays on the device until a changelog reads it. */
  private readonly ledger: CaptureLedger | undefined;
  /** The path for events of several steps each (KeyedStepConfig.frames). */
  private readonly frames: FrameStepper<In, E> | undefined;

  constructor(
    private readonly config: KeyedStepConfig<In, E>,
    maxBatchSize: number,
    private readonly now: () => number,
  ) {
    const { model } = config.store;
    this.input = new Float32Array(maxBatchSize * model.inputSize);
    this.state = new Float32Array(maxBatchSize * model.stateSize);
    this.next = new Float32Array(maxBatchSize * model.stateSize);
    this.output = new Float32Array(maxBatchSize * model.outputSize);
    this.raw = new Float64Array(model.inputSize);
    const { backend } = config;
    this.microBatch = microBatchPath(backend, config);
    this.staged = new Float32Array(this.microBatch ? maxBatchSize * model.inputSize : 0);
    this.table = stateResidence(backend, config.store, config).table;
    config.store.attachDevice(this.table);
    this.ledger = this.table && config.captureState ? new CaptureLedger(this.table, model.stateSegments, model.stateSize, undefined, config.onKeptStatesSpilled) : undefined;
    this.carryNames = Object.keys(config.carry ?? {});
    this.carryOf = Object.values(config.carry ?? {});
    this.frames = config.frames ? new FrameStepper(config as KeyedStepConfig<In, E> & { frames: FrameSteps<E> }, this) : undefined;
    const { history } = config;
    if (history && config.frames) throw new RnnStreamError('rnnByKey: a warm-up history is for pipelines of features, not of frames');
    if (history && history.offset !== this.carryNames.length) throw new RnnStreamError(`rnnByKey: the warm-up history must start after the pipeline's ${this.carryNames.length} carry value(s), not at ${history.offset}`);
    const carried = this.carryNames.length + (history?.size ?? 0);
    if (!config.frames && carried !== config.store.carrySize) {
      throw new RnnStreamError(`rnnByKey: the pipeline carries ${carried} value(s) per key but the state store keeps ${config.store.carrySize}`);
    }
  }

  run(items: In[]): KeyedStep<In>[] | Promise<KeyedStep<In>[]> {
    const { keyOf } = this.config;
    const results = new Array<KeyedStep<In>>(items.length);
    const keys = new Array<string | undefined>(items.length);
    const occurrences = new Map<string, number>();
    const waves: number[][] = [];
    for (let i = 0; i < items.length; i++) {
      const key = keyOf(items[i]!);
      keys[i] = key;
      if (key === undefined) {
        results[i] = { kind: 'passthrough', item: items[i]! };
        continue;
      }
      const w = occurrences.get(key) ?? 0;
      occurrences.set(key, w + 1);
      (waves[w] ??= []).push(i);
    }
    this.config.onBatch?.(items.length, waves.length);
    const now = this.now();
    this.config.store.evictIdle(now);
    const cold = this.config.history && this.config.store.coldCount > 0 ? this.coldSlots(occurrences.keys()) : [];
    if (cold.length > 0) return this.warmUp(cold).then(() => this.stepBatch(items, keys, results, waves, occurrences, now));
    return this.stepBatch(items, keys, results, waves, occurrences, now);
  }

  /** run's stepping, once every key of the micro-batch holds state of the model served. */
  private stepBatch(items: In[], keys: (string | undefined)[], results: KeyedStep<In>[], waves: number[][], occurrences: Map<string, number>, now: number): KeyedStep<In>[] | Promise<KeyedStep<In>[]> {
    if (this.frames) return this.frames.run(items, keys, results, now);
    if (this.microBatch && !this.endsEarly(waves, items, keys, occurrences)) return this.runMicroBatch(waves, items, keys, results, now);
    const next = (w: number): KeyedStep<In>[] | Promise<KeyedStep<In>[]> => {
      for (; w < waves.length; w++) {
        const pending = this.stepWave(waves[w]!, items, keys, results, now);
        if (pending) return pending.then(() => next(w + 1));
      }
      return results;
    };
    // The wave-by-wave path steps from the host's copy: read the device's back first.
    const pulled = this.table ? this.config.store.pullSlots([...occurrences.keys()].map((k) => this.config.store.find(k)).filter((slot) => slot >= 0)) : undefined;
    return pulled ? pulled.then(() => next(0)) : next(0);
  }

  /** The slots of `keys` the store marks cold (their state made by an earlier model). */
  private coldSlots(keys: Iterable<string>): number[] {
    const { store } = this.config;
    const cold: number[] = [];
    for (const key of keys) {
      const slot = store.find(key);
      if (slot >= 0 && store.chunkOf(slot).cold[slot & (CHUNK_SLOTS - 1)] === 1) cold.push(slot);
    }
    return cold;
  }

  /**
   * Rebuilds cold keys' state under the model served now: each key's history, oldest event
   * first, stepped from zero state in batches of up to maxBatchSize keys, where wave w steps the
   * keys with more than w events (longest histories first, so they are a prefix). The class
   * after a key's last history event is its previous class, for prequential scoring.
   */
  private async warmUp(slots: number[]): Promise<void> {
    const started = performance.now();
    const { store, backend, classify } = this.config;
    const history = this.config.history!;
    const C = store.carrySize;
    const MASK = CHUNK_SLOTS - 1;
    const keys = slots.map((slot) => ({ slot, filled: history.filled(store.chunkOf(slot).carry, (slot & MASK) * C) })).sort((a, b) => b.filled - a.filled);
    const maxKeys = this.input.length / store.model.inputSize;
    let events = 0;
    for (let from = 0; from < keys.length; from += maxKeys) {
      const batch = keys.slice(from, from + maxKeys);
      let B = batch.filter((k) => k.filled > 0).length;
      this.state.fill(0, 0, B * store.model.stateSize);
      for (let w = 0; B > 0; w++) {
        for (let b = 0; b < B; b++) this.historyRowInto(batch[b]!.slot, batch[b]!.filled, w, b);
        await backend.step(B, this.input, this.state, this.next, this.output);
        events += B;
        let still = 0;
        while (still < B && batch[still]!.filled > w + 1) still++;
        for (let b = still; b < B; b++) this.warmed(batch[b]!.slot, b, B, classify === true);
        this.carryOver(still, B);
        B = still;
      }
      // A key with no history starts from zero state, as a new key does.
      for (const k of batch) if (k.filled === 0) this.warmed(k.slot, -1, 0, false);
    }
    this.config.onWarmUp?.(slots.length, events, performance.now() - started);
  }

  /** The k-th oldest event of the history in `slot` (of `filled`), normalised by the model served, into input row b. */
  private historyRowInto(slot: number, filled: number, k: number, b: number): void {
    const { store } = this.config;
    const { mean, std } = store.model.normalization;
    const I = store.model.inputSize;
    const c = store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    const at = this.config.history!.rowAt(x * store.carrySize, c.steps[x]!, filled, k);
    for (let f = 0; f < I; f++) this.input[b * I + f] = (c.carry[at + f]! - mean[f]!) / std[f]!;
  }

  /** A warmed-up key's state (row b of `next`, a batch of B; b < 0: zeros) into its slot, now of the model served. */
  private warmed(slot: number, b: number, B: number, classify: boolean): void {
    const { store } = this.config;
    const { model } = store;
    const S = model.stateSize;
    const c = store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    if (b < 0) c.state.fill(0, x * S, (x + 1) * S);
    else for (const seg of model.stateSegments) c.state.set(this.next.subarray(B * seg.offset + b * seg.size, B * seg.offset + (b + 1) * seg.size), x * S + seg.offset);
    if (classify) c.lastClass[x] = b < 0 ? -1 : argmax(this.output.subarray(b * model.outputSize, (b + 1) * model.outputSize));
    c.residence[x] = Residence.HOST;
    store.warmed(slot);
  }

  /** The first `keep` keys' states of `next` (a batch of B) into `state` as a batch of `keep`: the next wave's input state. */
  private carryOver(keep: number, B: number): void {
    for (const seg of this.config.store.model.stateSegments) {
      for (let b = 0; b < keep; b++) {
        const from = B * seg.offset + b * seg.size;
        const to = keep * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) this.state[to + j] = this.next[from + j]!;
      }
    }
  }

  /**
   * Whether a key ends (`ends`) before its last event in this micro-batch: its next event starts
   * from a fresh state, which a chain of waves on the device cannot express, so such a
   * micro-batch is stepped wave by wave (rare: a key's events after its end start a new one).
   */
  private endsEarly(waves: number[][], items: In[], keys: (string | undefined)[], occurrences: Map<string, number>): boolean {
    const { ends, eventOf } = this.config;
    if (!ends) return false;
    for (let w = 0; w < waves.length - 1; w++) {
      for (const i of waves[w]!) if (occurrences.get(keys[i]!)! > w + 1 && ends(eventOf(items[i]!))) return true;
    }
    return false;
  }

  /**
   * A micro-batch in one backend call: the host's part of every wave first (slots, sequence
   * checks, features, what each key remembers, in event order), then `stepMicroBatch` over
   * every accepted event, then the results and each key's final state.
   */
  private runMicroBatch(waves: number[][], items: In[], keys: (string | undefined)[], results: KeyedStep<In>[], now: number): KeyedStep<In>[] | Promise<KeyedStep<In>[]> {
    const chains = new Map<string, Chain>();
    let accepted = 0;
    for (const wave of waves) {
      for (const i of wave) {
        const row = this.admit(i, items, keys, results, now, accepted, chains);
        if (row) accepted++;
      }
    }
    if (chains.size === 0) return results;
    // Keys with the most events first: wave w then holds keys 0..waveSizes[w]-1 (see MicroBatch).
    const ordered = [...chains.values()].sort((a, b) => b.rows.length - a.rows.length);
    if (this.table) {
      const slotBatch = this.slotMicroBatchOf(ordered);
      const pending = this.table.step(slotBatch);
      if (pending) return pending.then(() => this.finishMicroBatch(ordered, slotBatch, undefined, items, results));
      return this.finishMicroBatch(ordered, slotBatch, undefined, items, results);
    }
    const batch = this.microBatchOf(ordered);
    const pending = this.config.backend.stepMicroBatch!(batch);
    if (pending) return pending.then(() => this.finishMicroBatch(ordered, batch, batch.finalState, items, results));
    return this.finishMicroBatch(ordered, batch, batch.finalState, items, results);
  }

  /**
   * Item i's host part in a micro-batch: its key's slot, the sequence and feature checks (a
   * refused event is `rejected` in results), and for an accepted one its features (staged at
   * row `accepted`) and what its key remembers now, as the wave-by-wave path does after a step.
   */
  private admit(i: number, items: In[], keys: (string | undefined)[], results: KeyedStep<In>[], now: number, accepted: number, chains: Map<string, Chain>): ChainRow | undefined {
    const { store, eventOf, positionOf, sequence, captureState } = this.config;
    const key = keys[i]!;
    const slot = store.acquire(key, now);
    const c = store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    const fresh = c.steps[x] === 0;
    const event = eventOf(items[i]!);
    const gap = sequenceVerdict(this.config.sequence, event, c.sequence[x]!, fresh);
    const prev = this.prevOf(slot);
    const reason = typeof gap === 'string' ? gap : this.normaliseInto(event, prev, this.staged, accepted * store.model.inputSize);
    if (reason !== undefined) {
      results[i] = { kind: 'rejected', item: items[i]!, key, reason };
      if (fresh) store.deleteSlot(slot);
      return undefined;
    }
    let chain = chains.get(key);
    if (!chain) chains.set(key, (chain = this.chainFor(slot)));
    const position = positionOf?.(items[i]!);
    const steps = ++c.steps[x]!;
    c.partition[x] = position ? position.partition : -1;
    c.offset[x] = position ? position.offset : 0;
    if (sequence) c.sequence[x] = sequence.of(event);
    const C = store.carrySize;
    for (let k = 0; k < this.carryOf.length; k++) c.carry[x * C + k] = this.carryOf[k]!(event);
    // normaliseInto left the event's raw features in this.raw.
    this.config.history?.push(c.carry, x * C, steps, this.raw);
    const row: ChainRow = { i, staged: accepted, gap: gap as number, prev, steps, position, sequence: c.sequence[x]!, carry: captureState ? c.carry.slice(x * C, (x + 1) * C) : undefined, warm: this.config.history?.warm(c.carry, x * C) };
    chain.rows.push(row);
    return row;
  }

  /** A key's chain, with where its state before the micro-batch is: the device's table, zeros, or the host. */
  private chainFor(slot: number): Chain {
    const S = this.config.store.model.stateSize;
    const c = this.config.store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    if (this.table && c.residence[x] !== Residence.HOST) return { slot, initial: undefined, inTable: true, rows: [] };
    // A view, not a copy: microBatchOf (slotMicroBatchOf) reads it right after the admits, before
    // anything writes the store's state (a copy per key and micro-batch was 2 % of a replay).
    const initial = c.state.subarray(x * S, (x + 1) * S);
    // A new key's zeros need not go up to the table.
    return { slot, initial: this.table && isZero(initial) ? undefined : initial, inTable: false, rows: [] };
  }

  /**
   * The event's normalised features into `out` at `at`; the reason if one is not finite (the
   * last such). One definition for both paths: a rejection reads the same either way.
   */
  private normaliseInto(event: E, prev: Carried | undefined, out: Float32Array, at: number): string | undefined {
    const { model } = this.config.store;
    const { mean, std } = model.normalization;
    const I = model.inputSize;
    const raw = this.raw;
    raw.fill(Number.NaN);
    this.config.features(event, prev, raw);
    let bad = -1;
    for (let f = 0; f < I; f++) {
      const v = (raw[f]! - mean[f]!) / std[f]!;
      if (!Number.isFinite(v)) bad = f;
      out[at + f] = v;
    }
    return bad < 0 ? undefined : `feature "${model.features[bad]}" is not finite (${raw[bad]})`;
  }

  /**
   * The chains' rows as the backend takes them: wave sizes, input rows wave by wave, room for the
   * outputs, and (`withStates`) for every row's state.
   */
  private rowsOf(ordered: Chain[], withStates: boolean): Pick<MicroBatch, 'keys' | 'waveSizes' | 'input' | 'output' | 'states'> {
    const { model } = this.config.store;
    const I = model.inputSize;
    const waveSizes = new Int32Array(ordered[0]!.rows.length);
    for (const chain of ordered) for (let w = 0; w < chain.rows.length; w++) waveSizes[w]!++;
    const { starts, rows } = waveStarts(waveSizes);
    const input = new Float32Array(rows * I);
    const { staged } = this;
    // Element by element: a row is a few features, and a view per row to copy it costs more.
    ordered.forEach((chain, u) =>
      chain.rows.forEach((row, w) => {
        const from = row.staged * I;
        const to = (starts[w]! + u) * I;
        for (let f = 0; f < I; f++) input[to + f] = staged[from + f]!;
      }),
    );
    const output = new Float32Array(rows * model.outputSize);
    return { keys: ordered.length, waveSizes, input, output, ...(withStates ? { states: new Float32Array(rows * model.stateSize) } : {}) };
  }

  /** The chains as a micro-batch whose keys' state goes up and comes back (no slot table). */
  private microBatchOf(ordered: Chain[]): MicroBatch {
    const { model } = this.config.store;
    const U = ordered.length;
    const state = new Float32Array(U * model.stateSize);
    ordered.forEach((chain, u) => {
      const { initial } = chain;
      if (!initial) return;
      for (const seg of model.stateSegments) {
        const to = U * seg.offset + u * seg.size;
        for (let j = 0; j < seg.size; j++) state[to + j] = initial[seg.offset + j]!;
      }
    });
    return { ...this.rowsOf(ordered, this.config.captureState === true), state, finalState: new Float32Array(U * model.stateSize) };
  }

  /** The chains as a micro-batch on the device's table: slots, where each key's state is, the few rows that go up. */
  private slotMicroBatchOf(ordered: Chain[]): SlotMicroBatch {
    const { model } = this.config.store;
    const S = model.stateSize;
    const U = ordered.length;
    // With a ledger every row's state stays on the device (keepStates) instead of coming back.
    const rows = this.rowsOf(ordered, this.config.captureState === true && this.ledger === undefined);
    const slots = Int32Array.from(ordered, (chain) => chain.slot);
    const from = new Int32Array(U);
    const uploading = ordered.filter((chain) => !chain.inTable && chain.initial);
    const uploads = new Float32Array(uploading.length * S);
    let r = 0;
    ordered.forEach((chain, u) => {
      if (chain.inTable) from[u] = FROM_TABLE;
      else if (!chain.initial) from[u] = FROM_ZEROS;
      else {
        for (const seg of model.stateSegments) uploads.set(chain.initial.subarray(seg.offset, seg.offset + seg.size), uploading.length * seg.offset + r * seg.size);
        from[u] = r++;
      }
    });
    return { ...rows, slots, from, uploadCount: uploading.length, uploads, ...(this.ledger ? { keepStates: true } : {}) };
  }

  /**
   * Each accepted event's result, in order per key, and each key's state after its last one:
   * copied from `finalState` to the host, or (undefined) left in the device's table.
   */
  private finishMicroBatch(ordered: Chain[], batch: Pick<MicroBatch, 'keys' | 'waveSizes' | 'output' | 'states'> & { kept?: KeptStates }, finalState: Float32Array | undefined, items: In[], results: KeyedStep<In>[]): KeyedStep<In>[] {
    const { store, eventOf, ends, classify, captureState } = this.config;
    const { model } = store;
    const S = model.stateSize;
    const O = model.outputSize;
    const { starts } = waveStarts(batch.waveSizes);
    // Every row's state kept on the device: captures read theirs when the changelog asks.
    const block = captureState && !batch.states && batch.kept ? this.ledger!.block(batch.kept) : undefined;
    // Every row's state read back: one view per wave, shared by the wave's captures.
    const waves = captureState && !block ? Array.from(batch.waveSizes, (n, w) => ({ states: batch.states!.subarray(starts[w]! * S, (starts[w]! + n) * S), batch: n, segments: model.stateSegments, size: S })) : undefined;
    ordered.forEach((chain, u) => {
      const c = store.chunkOf(chain.slot);
      const x = chain.slot & (CHUNK_SLOTS - 1);
      const key = c.keys[x]!;
      let ended = false;
      chain.rows.forEach((row, w) => {
        const at = starts[w]! + u;
        const out = batch.output.slice(at * O, (at + 1) * O);
        const best = argmax(out);
        const previousClass = c.lastClass[x]!;
        if (classify) c.lastClass[x] = best;
        const item = items[row.i]!;
        const meta = captureState ? { key, steps: row.steps, lastSeen: c.lastSeen[x]!, position: row.position, sequence: row.sequence, carry: row.carry!, lastClass: c.lastClass[x]! } : undefined;
        const captured = !meta ? undefined : block ? this.ledger!.capture(block, at, meta) : new WaveStateCapture(waves![w]!, u, meta);
        ended = ends?.(eventOf(item)) === true;
        results[row.i] = { kind: 'step', item, key, seq: row.steps, output: out, best, prev: row.prev, captured, gap: row.gap, ended, previousClass, warm: row.warm };
      });
      // The key's state after its last event.
      const U = batch.keys;
      if (finalState) for (const seg of model.stateSegments) c.state.set(finalState.subarray(U * seg.offset + u * seg.size, U * seg.offset + (u + 1) * seg.size), x * S + seg.offset);
      else c.residence[x] = Residence.DEVICE;
      if (ended) store.deleteSlot(chain.slot);
    });
    return results;
  }

  /** What the key in `slot` remembers of its last event, by name; undefined when it has none. */
  private prevOf(slot: number): Carried | undefined {
    const c = this.config.store.chunkOf(slot);
    const i = slot & (CHUNK_SLOTS - 1);
    if (c.steps[i] === 0) return undefined;
    const names = this.carryNames;
    const C = this.config.store.carrySize;
    const prev: Record<string, number> = {};
    for (let k = 0; k < names.length; k++) prev[names[k]!] = c.carry[i * C + k]!;
    return prev;
  }

  private stepWave(
    indices: number[],
    items: In[],
    keys: (string | undefined)[],
    results: KeyedStep<In>[],
    now: number,
  ): Promise<void> | undefined {
    const { store, backend, eventOf, captureState } = this.config;
    const { model } = store;
    const { input, state } = this;
    const I = model.inputSize;
    const S = model.stateSize;
    const MASK = CHUNK_SLOTS - 1;
    const segments = model.stateSegments;
    const stepping: number[] = [];
    const slots: number[] = [];
    const gaps: number[] = [];
    const prevs: (Carried | undefined)[] = [];
    for (const i of indices) {
      const key = keys[i]!;
      const slot = store.acquire(key, now);
      const c = store.chunkOf(slot);
      const fresh = c.steps[slot & MASK] === 0;
      const event = eventOf(items[i]!);
      const gap = sequenceVerdict(this.config.sequence, event, c.sequence[slot & MASK]!, fresh);
      if (typeof gap === 'string') {
        results[i] = { kind: 'rejected', item: items[i]!, key, reason: gap };
        // A key whose first event is refused holds no state: no slot for junk keys.
        if (fresh) store.deleteSlot(slot);
        continue;
      }
      const prev = this.prevOf(slot);
      const notFinite = this.normaliseInto(event, prev, input, stepping.length * I);
      if (notFinite !== undefined) {
        results[i] = { kind: 'rejected', item: items[i]!, key, reason: notFinite };
        if (fresh) store.deleteSlot(slot);
        continue;
      }
      // The step count this event will have (scatterOne counts it).
      this.config.history?.push(c.carry, (slot & MASK) * store.carrySize, c.steps[slot & MASK]! + 1, this.raw);
      stepping.push(i);
      slots.push(slot);
      gaps.push(gap);
      prevs.push(prev);
    }
    const B = stepping.length;
    if (B === 0) return undefined;
    // Gather with plain loops: a subarray view per key and segment costs more than copying a
    // few dozen floats.
    for (let b = 0; b < B; b++) {
      const slot = slots[b]!;
      const keyState = store.chunkOf(slot).state;
      const base = (slot & MASK) * S;
      for (const seg of segments) {
        const to = B * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) state[to + j] = keyState[base + seg.offset + j]!;
      }
    }
    const scatter = (): void => {
      // One copy of the wave's next states serves every capture in it (see WaveStateCapture).
      const wave = captureState ? { states: this.next.slice(0, B * S), batch: B, segments: model.stateSegments, size: S } : undefined;
      for (let b = 0; b < B; b++) this.scatterOne(b, B, stepping[b]!, slots[b]!, gaps[b]!, prevs[b], items, results, wave);
    };
    const pending = backend.step(B, input, state, this.next, this.output);
    if (pending) return pending.then(scatter);
    scatter();
    return undefined;
  }

  /** Writes key b's next state and what it remembers back to its slot, and makes its result. */
  private scatterOne(b: number, B: number, i: number, slot: number, gap: number, prev: Carried | undefined, items: In[], results: KeyedStep<In>[], wave: WaveStates | undefined): void {
    const { store, eventOf, positionOf, sequence, ends, classify } = this.config;
    const { model } = store;
    const { next, output } = this;
    const S = model.stateSize;
    const O = model.outputSize;
    const C = store.carrySize;
    const c = store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    const item = items[i]!;
    const event = eventOf(item);
    for (const seg of model.stateSegments) {
      const from = B * seg.offset + b * seg.size;
      const to = x * S + seg.offset;
      for (let j = 0; j < seg.size; j++) c.state[to + j] = next[from + j]!;
    }
    c.residence[x] = Residence.HOST;
    const steps = ++c.steps[x]!;
    const position = positionOf?.(item);
    c.partition[x] = position ? position.partition : -1;
    c.offset[x] = position ? position.offset : 0;
    if (sequence) c.sequence[x] = sequence.of(event);
    for (let k = 0; k < this.carryOf.length; k++) c.carry[x * C + k] = this.carryOf[k]!(event);
    // A small typed array of its own lives on V8's heap and is cheaper than a view.
    const out = output.slice(b * O, (b + 1) * O);
    const best = argmax(out);
    const previousClass = c.lastClass[x]!;
    if (classify) c.lastClass[x] = best;
    const key = c.keys[x]!;
    const captured = wave ? new WaveStateCapture(wave, b, { key, steps, lastSeen: c.lastSeen[x]!, position, sequence: c.sequence[x]!, carry: c.carry.slice(x * C, (x + 1) * C), lastClass: c.lastClass[x]! }) : undefined;
    const ended = ends?.(event) === true;
    const warm = this.config.history?.warm(c.carry, x * C);
    if (ended) store.deleteSlot(slot);
    results[i] = { kind: 'step', item, key, seq: steps, output: out, best, prev, captured, gap, ended, previousClass, warm };
  }
}

function isZero(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (values[i] !== 0) return false;
  return true;
}
