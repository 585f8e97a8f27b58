/**
 * rnnByKey's path for events that are several model steps each: an audio chunk is zero or more
 * feature frames, depending on how many samples it adds to what its key has left over. The key's
 * pipeline state (a front end's leftover samples, a decoder's partial transcript) lives in the
 * state store's carry columns, beside its hidden state: it is restored, evicted, dropped and
 * written to the changelog with it, exactly.
 *
 * A micro-batch is planned event by event in arrival order (each key's pipeline state advanced
 * over its events, refused events left out), then stepped in waves of frames: wave w holds the
 * w-th frame of every key in the micro-batch, so a key's frames run in order and every key's
 * frames run together. Then, event by event again, each event's frame outputs are folded into
 * its key's state (the decoder) and its result made.
 *
 * ```
 * events:  a1(2 frames)  b1(1)  a2(0)  b2(2)
 * waves:   [a1.0 b1.0] [a1.1 b2.0] [b2.1]
 * results: A1 B1 A2 B2          (A2: no frame, its transcript as A1 left it)
 * ```
 *
 * Hidden state is read from and written to the host's columns wave by wave (a device backend
 * steps each wave as one call; the micro-batch path and the slot table do not take frames).
 */
import type { StepBackend } from '../backends/types.js';
import type { RnnModel } from '../core/model.js';
import { HeldStateCapture, WaveStateCapture } from './lazy-snapshot.js';
import { CHUNK_SLOTS, type KeySnapshot, type KeyStateStore, type StatePosition } from './key-state-store.js';
import type { KeyedStep } from './keyed-stepper.js';
import { sequenceVerdict, type SequenceRule } from './sequence-verdict.js';

/** A pipeline whose events give zero or more model steps each, with state of its own per key. */
export interface FrameSteps<E> {
  /** Most model input rows (frames) one event can give. */
  readonly maxRows: number;
  /** Floats of the pipeline state the front end owns (leftover samples...); the decoder owns the rest of the carry. */
  readonly frontEndSize: number;
  /** A new key's pipeline state (its carry columns, NaN until then). */
  readonly init: (state: Float64Array) => void;
  /**
   * Advances the front end's part of `state` over `event` and writes the model's raw input rows
   * into `out` (rows x inputSize): the number of rows, or why the event is refused (`state` is
   * then thrown away).
   */
  readonly advance: (event: E, state: Float64Array, out: Float64Array) => number | string;
  /**
   * Once the event's rows are stepped: folds their outputs (rows x outputSize) into the decoder's
   * part of `state`, and returns what the event reports (its partial transcript).
   */
  readonly finish: (event: E, outputs: Float32Array, rows: number, state: Float64Array) => unknown;
}

/** What the frame path needs of rnnByKey's configuration. */
export interface FrameStepperConfig<In, E> {
  readonly backend: StepBackend;
  readonly store: KeyStateStore;
  readonly frames: FrameSteps<E>;
  readonly eventOf: (item: In) => E;
  readonly positionOf?: (item: In) => StatePosition | undefined;
  readonly sequence?: SequenceRule<E>;
  readonly ends?: (event: E) => boolean;
  readonly captureState?: boolean;
}

/** One accepted event: where its rows are, and what its key holds after it. */
interface Plan {
  readonly i: number;
  readonly key: string;
  readonly slot: number;
  readonly rows: number;
  /** Its first row in the staging buffer. */
  readonly staged: number;
  readonly gap: number;
  readonly steps: number;
  readonly sequence: number;
  readonly position: StatePosition | undefined;
  /** The pipeline state after the front end (the decoder's part is filled in when finishing). */
  readonly state: Float64Array;
  readonly outputs: Float32Array;
  /** Where the key's hidden state right after the event's last frame is (captureState, rows > 0). */
  hidden?: WaveRow;
}

/** A key's row in a wave's copy of its next states. */
interface WaveRow {
  readonly wave: Float32Array;
  readonly batch: number;
  readonly index: number;
}

/** A key's progress through the micro-batch being planned. */
interface Cursor {
  readonly slot: number;
  /** Its pipeline state after its last accepted event. */
  state: Float64Array;
  lastSequence: number;
  steps: number;
  /** Frames planned so far: its next frame goes to this wave. */
  frames: number;
  /** Its last event ended it (`ends`): its next one waits for the next micro-batch. */
  ended: boolean;
  /** Accepted events so far in this micro-batch. */
  accepted: number;
  /** Its hidden state before the micro-batch (captureState: an event with no rows reports it). */
  readonly before: Float32Array | undefined;
  /** The decoder's part of its pipeline state before the micro-batch. */
  readonly decoder: Float64Array;
}

type Result<In> = KeyedStep<In>;

/** The buffers of one wave, shared with rnnByKey's wave path (sized for maxBatchSize keys). */
export interface WaveBuffers {
  readonly input: Float32Array;
  readonly state: Float32Array;
  readonly next: Float32Array;
  readonly output: Float32Array;
}

export class FrameStepper<In, E> {
  private readonly model: RnnModel;
  private readonly raw: Float64Array;
  private staged: Float32Array;

  constructor(
    private readonly config: FrameStepperConfig<In, E>,
    private readonly buffers: WaveBuffers,
  ) {
    this.model = config.store.model;
    this.raw = new Float64Array(config.frames.maxRows * this.model.inputSize);
    this.staged = new Float32Array(4 * config.frames.maxRows * this.model.inputSize);
  }

  /**
   * Steps items[from..] (their passthrough results are set already): up to the first event of a
   * key that an earlier one ended, then, after those, the rest.
   */
  run(items: In[], keys: (string | undefined)[], results: Result<In>[], now: number, from = 0): Result<In>[] | Promise<Result<In>[]> {
    const cursors = new Map<string, Cursor>();
    const plans: Plan[] = [];
    const waves: { plan: Plan; row: number }[][] = [];
    let rowsStaged = 0;
    let end = items.length;
    for (let i = from; i < items.length; i++) {
      const key = keys[i];
      if (key === undefined) continue;
      let cursor = cursors.get(key);
      if (cursor?.ended) {
        end = i;
        break;
      }
      if (!cursor) cursors.set(key, (cursor = this.cursorOf(key, now)));
      const plan = this.plan(i, items, key, cursor, rowsStaged, results);
      if (!plan) continue;
      plans.push(plan);
      rowsStaged += plan.rows;
      for (let row = 0; row < plan.rows; row++) (waves[cursor.frames + row] ??= []).push({ plan, row });
      cursor.frames += plan.rows;
    }
    const finished = (): Result<In>[] | Promise<Result<In>[]> => {
      this.finish(plans, cursors, items, results);
      return end < items.length ? this.run(items, keys, results, now, end) : results;
    };
    const next = (w: number): Result<In>[] | Promise<Result<In>[]> => {
      for (; w < waves.length; w++) {
        const pending = this.stepWave(waves[w]!);
        if (pending) return pending.then(() => next(w + 1));
      }
      return finished();
    };
    return next(0);
  }

  private cursorOf(key: string, now: number): Cursor {
    const { store, frames, captureState } = this.config;
    const slot = store.acquire(key, now);
    const c = store.chunkOf(slot);
    const x = slot & (CHUNK_SLOTS - 1);
    const C = store.carrySize;
    const S = this.model.stateSize;
    const state = c.carry.slice(x * C, (x + 1) * C);
    if (c.steps[x] === 0) frames.init(state);
    return {
      slot,
      state,
      lastSequence: c.sequence[x]!,
      steps: c.steps[x]!,
      frames: 0,
      ended: false,
      accepted: 0,
      before: captureState ? c.state.slice(x * S, (x + 1) * S) : undefined,
      decoder: state.slice(frames.frontEndSize),
    };
  }

  /** Item i's checks and rows; undefined (and `rejected` in results) when it is refused. */
  private plan(i: number, items: In[], key: string, cursor: Cursor, staged: number, results: Result<In>[]): Plan | undefined {
    const { frames, eventOf, sequence, ends, positionOf } = this.config;
    const event = eventOf(items[i]!);
    const gap = sequenceVerdict(sequence, event, cursor.lastSequence, cursor.steps === 0);
    const state = cursor.state.slice();
    const rows = typeof gap === 'string' ? gap : frames.advance(event, state, this.raw);
    const reason = typeof rows === 'string' ? rows : this.stage(rows, staged);
    if (reason !== undefined) {
      results[i] = { kind: 'rejected', item: items[i]!, key, reason };
      return undefined;
    }
    const n = rows as number;
    cursor.state = state;
    cursor.steps++;
    cursor.accepted++;
    cursor.lastSequence = sequence ? sequence.of(event) : Number.NaN;
    if (ends?.(event) === true) cursor.ended = true;
    return { i, key, slot: cursor.slot, rows: n, staged, gap: gap as number, steps: cursor.steps, sequence: cursor.lastSequence, position: positionOf?.(items[i]!), state, outputs: new Float32Array(n * this.model.outputSize) };
  }

  /** The rows in `raw`, normalised, into the staging buffer at row `at`; the reason if one is not finite. */
  private stage(rows: number, at: number): string | undefined {
    const { mean, std } = this.model.normalization;
    const I = this.model.inputSize;
    if ((at + rows) * I > this.staged.length) {
      const grown = new Float32Array(Math.max(2 * this.staged.length, (at + rows) * I));
      grown.set(this.staged);
      this.staged = grown;
    }
    for (let r = 0; r < rows; r++) {
      for (let f = 0; f < I; f++) {
        const v = (this.raw[r * I + f]! - mean[f]!) / std[f]!;
        if (!Number.isFinite(v)) return `feature "${this.model.features[f]}" of frame ${r} is not finite (${this.raw[r * I + f]})`;
        this.staged[(at + r) * I + f] = v;
      }
    }
    return undefined;
  }

  /** One wave: each entry's key's next frame, stepped together; hidden state from and back to the store. */
  private stepWave(entries: { plan: Plan; row: number }[]): Promise<void> | undefined {
    const { store, backend } = this.config;
    const { input, state, next, output } = this.buffers;
    const I = this.model.inputSize;
    const S = this.model.stateSize;
    const B = entries.length;
    const segments = this.model.stateSegments;
    for (let b = 0; b < B; b++) {
      const { plan, row } = entries[b]!;
      input.set(this.staged.subarray((plan.staged + row) * I, (plan.staged + row + 1) * I), b * I);
      const keyState = store.chunkOf(plan.slot).state;
      const base = (plan.slot & (CHUNK_SLOTS - 1)) * S;
      for (const seg of segments) {
        const to = B * seg.offset + b * seg.size;
        for (let j = 0; j < seg.size; j++) state[to + j] = keyState[base + seg.offset + j]!;
      }
    }
    const scatter = (): void => this.scatter(entries);
    const pending = backend.step(B, input, state, next, output);
    if (pending) return pending.then(scatter);
    scatter();
    return undefined;
  }

  private scatter(entries: { plan: Plan; row: number }[]): void {
    const { store, captureState } = this.config;
    const { next, output } = this.buffers;
    const S = this.model.stateSize;
    const O = this.model.outputSize;
    const B = entries.length;
    // One copy of the wave's next states serves every capture in it (see WaveStateCapture).
    const wave = captureState ? next.slice(0, B * S) : undefined;
    for (let b = 0; b < B; b++) {
      const { plan, row } = entries[b]!;
      const c = store.chunkOf(plan.slot);
      const x = plan.slot & (CHUNK_SLOTS - 1);
      for (const seg of this.model.stateSegments) {
        const from = B * seg.offset + b * seg.size;
        const to = x * S + seg.offset;
        for (let j = 0; j < seg.size; j++) c.state[to + j] = next[from + j]!;
      }
      plan.outputs.set(output.subarray(b * O, (b + 1) * O), row * O);
      if (wave && row === plan.rows - 1) plan.hidden = { wave, batch: B, index: b };
    }
  }

  /** Each accepted event's decoding, state and result, in arrival order. */
  private finish(plans: Plan[], cursors: Map<string, Cursor>, items: In[], results: Result<In>[]): void {
    const { store, frames, eventOf, ends, captureState } = this.config;
    const C = store.carrySize;
    const F = frames.frontEndSize;
    /** Per key, the decoder's state and where the hidden state its previous event left are. */
    const left = new Map<string, { decoder: Float64Array; hidden: WaveRow | Float32Array | undefined }>();
    for (const plan of plans) {
      const cursor = cursors.get(plan.key)!;
      const c = store.chunkOf(plan.slot);
      const x = plan.slot & (CHUNK_SLOTS - 1);
      const before = left.get(plan.key);
      // The decoder's part as the key's previous event left it (planning advanced only the front end's).
      plan.state.set(before?.decoder ?? cursor.decoder, F);
      const event = eventOf(items[plan.i]!);
      const decoded = frames.finish(event, plan.outputs, plan.rows, plan.state);
      c.carry.set(plan.state, x * C);
      c.steps[x] = plan.steps;
      c.partition[x] = plan.position ? plan.position.partition : -1;
      c.offset[x] = plan.position ? plan.position.offset : 0;
      c.sequence[x] = plan.sequence;
      const hidden = plan.rows > 0 ? plan.hidden : before ? before.hidden : cursor.before;
      const captured = captureState ? this.captureOf(plan, hidden, c.lastSeen[x]!) : undefined;
      left.set(plan.key, { decoder: plan.state.slice(F), hidden });
      const ended = ends?.(event) === true;
      if (ended) store.deleteSlot(plan.slot);
      results[plan.i] = { kind: 'step', item: items[plan.i]!, key: plan.key, seq: plan.steps, output: plan.outputs, best: -1, rows: plan.rows, prev: undefined, captured, gap: plan.gap, ended, previousClass: -1, decoded };
    }
    // A key whose every event was refused holds no state: no slot for junk keys.
    for (const cursor of cursors.values()) if (cursor.accepted === 0 && cursor.steps === 0) store.deleteSlot(cursor.slot);
  }

  /** The event's snapshot for the changelog: its hidden state (a wave's row, or held) and its finished pipeline state. */
  private captureOf(plan: Plan, hidden: WaveRow | Float32Array | undefined, lastSeen: number): KeySnapshot {
    const carry = plan.state.slice();
    const S = this.model.stateSize;
    const meta = { key: plan.key, steps: plan.steps, lastSeen, position: plan.position, sequence: plan.sequence, carry, lastClass: -1 };
    if (hidden instanceof Float32Array || hidden === undefined) return new HeldStateCapture(hidden ?? new Float32Array(S), meta);
    return new WaveStateCapture({ states: hidden.wave, batch: hidden.batch, segments: this.model.stateSegments, size: S }, hidden.index, meta);
  }
}
