/**
 * Every key's recurrent state on the device, by slot (the GPU.js half of DeviceStateTable): one
 * texture per layer holding that layer's state rows (h, then c for an LSTM) of every slot, laid
 * out as gpujs-kernels.ts's slot kernels read it. A micro-batch gathers its keys' rows from it
 * (`gather`), and its keys' new rows are scattered back (`scatter`), both on the device; only
 * slot numbers go up. The table grows by doubling as the store's slots do.
 *
 * On the host backends (GPU.js cpu and webasm kernels, which return arrays) the same kernels run
 * on arrays, which is how the unit tests check this code where there is no GL.
 */
import * as K from './gpujs-kernels.js';

/* eslint-disable @typescript-eslint/no-explicit-any */
type AnyKernel = ((...args: any[]) => any) & { destroy?: () => void };

/** What the table needs of its backend: kernels, counted calls and transfers, and the texture limit. */
export interface KernelHost {
  /**
   * A kernel of one output shape and constants, made once; `immutable`: each result a texture of
   * its own; `dynamic` (default): its arguments' sizes may vary (uniforms rather than constants).
   */
  shaped(name: string, source: (...a: any[]) => number, output: number[], constants: Record<string, number>, immutable: boolean, dynamic?: boolean): AnyKernel;
  /** One kernel call, counted. */
  run(kernel: AnyKernel, ...args: unknown[]): any;
  /** `rows` rows of `cols` as a [cols, rows] kernel argument (uploaded, counted). */
  upload(values: Float32Array, cols: number, rows: number): unknown;
  /** A small vector argument (slot numbers), counted as uploaded. */
  vector(values: Float32Array): Float32Array;
  /** A device result read back into host rows (counted). */
  readBack(value: any, cols: number, rows: number): Float32Array[] | Promise<Float32Array[]>;
  /** Frees a device texture (a host array needs nothing). */
  free(value: unknown): void;
  /** The widest and tallest texture a kernel may write. */
  readonly maxTextureSize: number;
}

const nextPow2 = (n: number): number => (n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n)));

/** Fewest rows a table starts with: growing a tiny table again and again costs more than the rows. */
const MIN_TABLE_ROWS = 64;

export class GpuJsSlotTable {
  /** One texture per layer, [cols[k] * blocks, rows]. */
  private textures: unknown[] = [];
  private rows = 0;
  private blocks = 0;

  constructor(
    private readonly host: KernelHost,
    /** Columns of each layer's state rows. */
    private readonly cols: readonly number[],
  ) {}

  /** Most slots a texture can hold: as many rows as allowed, in as many column blocks as fit. */
  get maxSlots(): number {
    const max = this.host.maxTextureSize;
    return Number.isFinite(max) ? max * Math.floor(max / Math.max(...this.cols)) : Number.MAX_SAFE_INTEGER;
  }

  /** Slots the table holds now. */
  get capacity(): number {
    return this.rows * this.blocks;
  }

  /** Grows the table (doubling, on the device) until every slot of `used` fits; new slots are zeros. */
  *ensure(used: Int32Array): Generator<unknown, void, any> {
    let slots = 0;
    for (const s of used) slots = Math.max(slots, s + 1);
    if (slots <= this.capacity) return;
    if (slots > this.maxSlots) throw new Error(`${slots} slots do not fit the device's ${this.maxSlots}-slot state table`);
    const max = this.host.maxTextureSize;
    const rows = Math.min(nextPow2(Math.max(slots, MIN_TABLE_ROWS, 2 * this.capacity)), Number.isFinite(max) ? max : Infinity);
    const blocks = nextPow2(Math.ceil(Math.max(slots, 2 * this.capacity) / rows));
    const oldRows = this.rows;
    const oldSlots = this.capacity;
    const next: unknown[] = [];
    for (let k = 0; k < this.cols.length; k++) {
      const cols = this.cols[k]!;
      const output = [cols * blocks, rows];
      if (oldSlots === 0) {
        next.push(yield this.host.run(this.host.shaped(`slot zeros ${cols}x${blocks}x${rows}`, K.zeros, output, {}, true)));
      } else {
        const grow = this.host.shaped(`slot grow ${cols}x${blocks}x${rows} from ${oldRows}x${oldSlots}`, K.growSlots, output, { cols, tableRows: rows, oldRows, oldSlots }, true);
        next.push(yield this.host.run(grow, this.textures[k]));
        this.host.free(this.textures[k]);
      }
    }
    this.textures = next;
    this.rows = rows;
    this.blocks = blocks;
  }

  /**
   * Layer k's state rows of a micro-batch's keys, [cols, bucket] (a texture of its own): key u
   * from the slot `source[u]` (>= 0), zeros (-1), or row -2 - source[u] of `uploads` (a
   * [cols, n] argument from `upload`). `source` is bucket long; padding rows are -1.
   */
  *gather(k: number, source: Float32Array, uploads: unknown, bucket: number): Generator<unknown, unknown, any> {
    const cols = this.cols[k]!;
    const kernel = this.host.shaped(`slot gather ${cols}x${bucket} of ${this.blocks}x${this.rows}`, K.gatherSlots, [cols, bucket], { cols, tableRows: this.rows }, true);
    return yield this.host.run(kernel, this.textures[k], uploads, source);
  }

  /**
   * Which key of a micro-batch each slot takes (slotKeys): key keyOf[i] into slot
   * sortedSlots[i] (ascending, n of them). A texture for every layer's `scatter`; freed by the caller.
   */
  *keysOfSlots(sortedSlots: Float32Array, keyOf: Float32Array, n: number): Generator<unknown, unknown, any> {
    // Halvings a search over the micro-batch's bucket of keys needs: one kernel per bucket, not per n.
    const searchSteps = Math.ceil(Math.log2(nextPow2(n) + 1)) + 1;
    const kernel = this.host.shaped(`slot keys ${this.blocks}x${this.rows} s${searchSteps}`, K.slotKeys, [this.blocks, this.rows], { tableRows: this.rows, searchSteps }, true);
    return yield this.host.run(kernel, sortedSlots, keyOf, n);
  }

  /**
   * Layer k's table with each slot's row of `latest` ([cols, latestRows]) where `keys`
   * (keysOfSlots) names one. It touches every slot, so its sizes are compiled in: sizes read
   * from uniforms cost several times as much per texel on Mesa.
   */
  *scatter(k: number, latest: unknown, latestRows: number, keys: unknown): Generator<unknown, void, any> {
    const cols = this.cols[k]!;
    const kernel = this.host.shaped(`slot scatter ${cols}x${this.blocks}x${this.rows} from ${latestRows}`, K.scatterSlots, [cols * this.blocks, this.rows], { cols }, true, false);
    const next = yield this.host.run(kernel, this.textures[k], latest, keys);
    this.host.free(this.textures[k]);
    this.textures[k] = next;
  }

  /** Each layer's state rows of `slots` (slots.length rows each), one read-back per layer. */
  *read(slots: Int32Array): Generator<unknown, Float32Array[][], any> {
    const bucket = nextPow2(slots.length);
    const source = new Float32Array(bucket).fill(-1);
    source.set(slots);
    const rows: Float32Array[][] = [];
    for (let k = 0; k < this.cols.length; k++) {
      const cols = this.cols[k]!;
      const none = yield this.host.upload(new Float32Array(cols), cols, 1);
      const gathered = yield* this.gather(k, this.host.vector(source), none, bucket);
      rows.push(yield this.host.readBack(gathered, cols, bucket));
      this.host.free(gathered);
      this.host.free(none);
    }
    return rows;
  }

  dispose(): void {
    for (const t of this.textures) this.host.free(t);
    this.textures = [];
    this.rows = this.blocks = 0;
  }
}
