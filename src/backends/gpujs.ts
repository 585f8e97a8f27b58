/**
 * GPU.js backends: `gpu` (headless-gl WebGL shaders), `webgpu` (WGSL compute shaders on Dawn via
 * the `webgpu` npm package), `webasm` (WebAssembly with f32x4 SIMD) and `cpu` (transpiled
 * JavaScript). All four run the same kernels (gpujs-kernels.ts): per layer one `gates` call and
 * one `update` call covering every key of the batch, then one `head` call.
 *
 * Batches are padded to a power-of-two bucket so each bucket's kernels compile once and never
 * resize; padded rows compute on zeros and are ignored.
 *
 * GPU.js silently degrades a kernel it cannot build to its cpu backend. That is a fallback this
 * project must never hide, so after the first call of every kernel the backend checks which
 * GPU.js kernel class actually ran and fails loudly if it is not the one asked for.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { softmaxInPlace } from '../core/cells.js';
import { BackendUnavailableError } from '../core/errors.js';
import type { LayerWeights, RnnModel } from '../core/model.js';
import * as K from './gpujs-kernels.js';
import { GpuJsSlotTable, type KernelHost } from './gpujs-slot-table.js';
import { FROM_TABLE, FROM_ZEROS, stepWavesOneByOne, waveStarts, type BackendName, type BackendProvider, type DeviceStateTable, type KeptRows, type KeptStates, type MicroBatch, type SlotMicroBatch, type StepBackend, type TransferCounts } from './types.js';

const require = createRequire(import.meta.url);

type GpuJsMode = 'headlessgl' | 'webgpu' | 'webasm' | 'cpu';

// gpu.js ships CommonJS with loose typings; this module is the only place that touches it.
/* eslint-disable @typescript-eslint/no-explicit-any */
type AnyKernel = ((...args: any[]) => any) & { kernel?: any; destroy?: () => void };

interface LayerKernels {
  readonly gates: AnyKernel;
  readonly update: AnyKernel;
}

interface BucketKernels {
  readonly layers: LayerKernels[];
  readonly head: AnyKernel;
  /** Padded host buffers: input [bucket, I], and per layer its state rows [bucket, cols] (see packLayer). */
  readonly input: Float32Array;
  readonly layerRows: Float32Array[];
  verified: boolean;
}

/** What GPU.js's kernel classes report as their `mode` (every GL kernel class says 'gpu'). */
const KERNEL_MODE_OF: Record<GpuJsMode, string> = {
  headlessgl: 'gpu',
  webgpu: 'webgpu',
  webasm: 'webasm',
  cpu: 'cpu',
};

function loadGpuJs(): any {
  try {
    return require('gpu.js');
  } catch (err) {
    throw new BackendUnavailableError('gpu.js', `the gpu.js package does not load: ${(err as Error).message}`, { cause: err });
  }
}

/** Why GPU.js found no headless-gl context: no package, no display, or no context on it. */
function whyNoHeadlessGl(): string {
  try {
    require('gl');
  } catch (err) {
    return `the optional "gl" package is not installed or did not build (${(err as Error).message.split('\n')[0]})`;
  }
  if (!process.env.DISPLAY) return 'headless-gl needs an X display and DISPLAY is unset (run under xvfb-run -a)';
  return `headless-gl could not create a WebGL context on DISPLAY=${process.env.DISPLAY}`;
}

/**
 * Which renderer headless-gl got. Mesa's software rasterizers (llvmpipe, softpipe, swrast) are
 * CPU code behind a GL API, not a GPU; the loaded driver library is the reliable tell because
 * ANGLE masks the RENDERER string.
 */
export function detectGlRenderer(): { software: boolean; description: string } {
  let libs: string[] = [];
  try {
    libs = readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[5] ?? '')
      .filter((p) => p.endsWith('.so') || /\.so[.\d]*$/.test(p));
  } catch {
    return { software: false, description: 'renderer unknown (no /proc/self/maps)' };
  }
  const names = [...new Set(libs.map((p) => p.slice(p.lastIndexOf('/') + 1)))];
  const soft = names.find((n) => /^(swrast_dri|kms_swrast_dri|libgallium|llvmpipe|softpipe)/.test(n));
  if (soft) return { software: true, description: `Mesa software renderer (${soft}): CPU code behind WebGL, not a GPU` };
  const hw = names.find((n) => /nvidia|_dri\.so|libamdgpu|libdrm_amdgpu|libmali|libEGL_nvidia/i.test(n));
  return { software: false, description: hw ? `hardware GL driver ${hw}` : 'hardware renderer (no software rasterizer loaded)' };
}

function findLibrary(name: string): boolean {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
    '/usr/local/lib',
    '/lib/x86_64-linux-gnu',
    '/lib64',
  ];
  return dirs.some((d) => existsSync(join(d, name)));
}

/**
 * Dawn's lifetime, which GPU.js does not manage: GPU.js shares one GPUDevice across every GPU
 * instance and `gpu.destroy()` never destroys it, and Dawn (webgpu@0.4.0) keeps the process alive
 * and spins a pump on the main thread (about one core on Linux/Vulkan, dawn-gpu/node-webgpu#17)
 * until the device is destroyed and the `navigator.gpu` we installed is dropped (the package's
 * README, "Lifetime"). So live webgpu backends are counted, and the last one disposed tears down
 * the device and the navigator. Without this, `auto` timing webgpu and keeping onnx left a
 * spinning pump behind, and a replay on webgpu printed its summary and never exited (seen on an
 * H100 host).
 */
let liveWebGpuBackends = 0;
let installedNavigator = false;

function retainWebGpu(): void {
  liveWebGpuBackends++;
}

function releaseWebGpu(gpuJs: any): Promise<void> {
  liveWebGpuBackends = Math.max(0, liveWebGpuBackends - 1);
  if (liveWebGpuBackends > 0) return Promise.resolve();
  const destroyed: Promise<void> = gpuJs.WebGPUContext?.destroy?.() ?? Promise.resolve();
  return destroyed.then(() => {
    // A backend created while the device was being destroyed acquires a fresh one; leave it be.
    if (liveWebGpuBackends > 0 || !installedNavigator) return;
    installedNavigator = false;
    delete (globalThis as any).navigator;
  });
}

/** Installs Dawn's navigator.gpu (the `webgpu` npm package) and asks it for an adapter. */
async function ensureWebGpuAdapter(GPU: any): Promise<string> {
  const g = globalThis as any;
  if (!g.navigator?.gpu && process.platform === 'linux' && !findLibrary('libvulkan.so.1')) {
    // Dawn would only print its own warning and return no adapter; say why up front instead.
    throw new BackendUnavailableError('webgpu', 'no Vulkan loader (libvulkan.so.1) on this host, so Dawn can reach no GPU');
  }
  if (!g.navigator?.gpu) {
    let dawn: any;
    try {
      dawn = require('webgpu');
    } catch (err) {
      throw new BackendUnavailableError('webgpu', `the optional "webgpu" package (Dawn) does not load: ${(err as Error).message.split('\n')[0]}`);
    }
    Object.assign(globalThis, dawn.globals);
    if (g.navigator) {
      // A runtime's own navigator (Node >= 21) stays; only its gpu is ours to drop later.
      g.navigator.gpu = dawn.create([]);
    } else {
      Object.defineProperty(globalThis, 'navigator', { value: { gpu: dawn.create([]) }, configurable: true, writable: true });
      installedNavigator = true;
    }
  }
  const adapter = await g.navigator.gpu.requestAdapter();
  if (!adapter) {
    throw new BackendUnavailableError('webgpu', 'Dawn found no WebGPU adapter on this host (it needs a Vulkan-capable GPU and driver)');
  }
  const info = adapter.info ?? {};
  if (!(await GPU.isWebGPUAvailable())) {
    throw new BackendUnavailableError('webgpu', 'gpu.js reports WebGPU unavailable although Dawn returned an adapter');
  }
  return [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ') || 'adapter without info';
}

const nextBucket = (n: number): number => (n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n)));

/** A device texture (GL or WebGPU, from a pipeline kernel) that must be freed, or a host array that need not. */
const free = (v: unknown): void => {
  if (v && typeof (v as { delete?: unknown }).delete === 'function') (v as { delete: () => void }).delete();
};

/** The slot gather's source vector, bucketU long: a slot, -1 (zeros), or -2 - r (upload row r); see gatherSlots. */
function gatherSource(mb: SlotMicroBatch, bucketU: number): Float32Array {
  const source = new Float32Array(bucketU).fill(-1);
  for (let u = 0; u < mb.keys; u++) {
    const f = mb.from[u]!;
    source[u] = f === FROM_TABLE ? mb.slots[u]! : f === FROM_ZEROS ? -1 : -2 - f;
  }
  return source;
}

/** A micro-batch's every-row state accumulators, one texture per layer ([cols, bucketR]), kept on the device. */
class GpuKeptStates implements KeptStates {
  private live: unknown[] | undefined;

  constructor(
    readonly owner: object,
    textures: unknown[],
    readonly rows: number,
    readonly bytes: number,
  ) {
    this.live = textures;
  }

  /** Layer k's texture; throws once released. */
  texture(k: number): unknown {
    if (!this.live) throw new Error('these kept micro-batch states were released');
    return this.live[k];
  }

  release(): void {
    for (const t of this.live ?? []) free(t);
    this.live = undefined;
  }
}

/** Counted host↔device traffic (see TransferCounts); only device modes count. */
class Transfers implements TransferCounts {
  bytesUp = 0;
  bytesDown = 0;
  kernelCalls = 0;
  readBacks = 0;
  calls = 0;
}

export class GpuJsBackend implements StepBackend {
  private readonly buckets = new Map<number, BucketKernels>();
  /** Kernels by shape that are not per wave bucket: uploads, zeros, accumulators. */
  private readonly shaped = new Map<string, AnyKernel>();
  private disposed = false;
  /**
   * GL and WebGPU: kernel results stay on the device as textures (pipeline kernels), weights are
   * uploaded once, and only what the caller needs is read back.
   */
  private readonly deviceResident: boolean;
  private weights!: { wih: unknown; whh: unknown; bih: unknown; bhh: unknown }[];
  private headWeights!: { w: unknown; b: unknown };
  private readonly counts = new Transfers();
  /** Index of each layer's first state segment (h; an LSTM's c follows). */
  private readonly firstSegment: number[] = [];
  /** Every key's state by slot, on the device (or in arrays, on the host kernels). */
  private readonly slotTable: GpuJsSlotTable;
  /** This backend as the slot table sees it (kernels, counted transfers, the texture limit). */
  private readonly host: KernelHost;
  /** Keys' state kept by slot in the backend (see DeviceStateTable); undefined where its probe failed. */
  stateTable: DeviceStateTable | undefined;

  private constructor(
    readonly name: BackendName,
    private baseDetail: string,
    private readonly model: RnnModel,
    private readonly mode: GpuJsMode,
    private readonly gpu: any,
    private readonly gpuJs: any,
  ) {
    this.deviceResident = mode === 'headlessgl' || mode === 'webgpu';
    let s = 0;
    for (const layer of model.layers) {
      this.firstSegment.push(s);
      s += layer.cell === 'lstm' ? 2 : 1;
    }
    this.host = this.kernelHost();
    const table = new GpuJsSlotTable(this.host, model.layers.map((_, k) => this.stateCols(k)));
    this.slotTable = table;
    this.stateTable = {
      get maxSlots() {
        return table.maxSlots;
      },
      step: (mb) => this.stepSlots(mb),
      read: (slots, into) => this.drive(this.readSlotsPlan(slots, into)),
      readKept: (parts, into) => this.drive(this.readKeptPlan(parts, into)),
    };
  }

  /** What runs, and whether the micro-batch path is off (and why). */
  get detail(): string {
    return this.baseDetail;
  }

  get device(): boolean {
    return this.deviceResident;
  }

  get transfers(): TransferCounts | undefined {
    return this.deviceResident ? { ...this.counts } : undefined;
  }

  static async create(name: BackendName, mode: GpuJsMode, model: RnnModel): Promise<GpuJsBackend> {
    const gpuJs = loadGpuJs();
    const { GPU } = gpuJs;
    let detail: string;
    if (mode === 'headlessgl') {
      if (!GPU.isHeadlessGLSupported) throw new BackendUnavailableError(name, whyNoHeadlessGl());
      detail = `gpu.js headless-gl, ${detectGlRenderer().description}`;
    } else if (mode === 'webgpu') {
      detail = `gpu.js WebGPU on Dawn: ${await ensureWebGpuAdapter(GPU)}`;
    } else if (mode === 'webasm') {
      if (!GPU.isWebAssemblySupported) throw new BackendUnavailableError(name, 'WebAssembly is not supported by this runtime');
      detail = 'gpu.js WebAssembly (f32x4 SIMD, single thread)';
    } else {
      detail = 'gpu.js cpu (transpiled JavaScript)';
    }
    const gpu = new GPU({ mode });
    if (gpu.Kernel?.mode !== KERNEL_MODE_OF[mode]) {
      gpu.destroy?.();
      throw new BackendUnavailableError(name, `gpu.js chose its "${gpu.Kernel?.mode}" kernels instead of "${mode}"`);
    }
    const backend = new GpuJsBackend(name, detail, model, mode, gpu, gpuJs);
    if (mode === 'webgpu') retainWebGpu();
    // Upload the weights, then compile and run the smallest bucket now, so a backend that cannot
    // run fails at selection.
    try {
      await backend.uploadWeights();
      const probe = backend.step(1, new Float32Array(model.inputSize), new Float32Array(model.stateSize), new Float32Array(model.stateSize), new Float32Array(model.outputSize));
      if (probe) await probe;
      await backend.probeMicroBatch();
      await backend.probeSlotTable();
    } catch (err) {
      backend.dispose();
      throw err;
    }
    return backend;
  }

  /**
   * Weights as the kernels index them, w[row][col]: on a device, textures made once (a GPU.js
   * Input or array argument is uploaded again on every kernel call: 0.26 MB per layer and call
   * for an H=128 LSTM); on the host, Inputs.
   */
  private async uploadWeights(): Promise<void> {
    // Awaited: a WebGPU kernel's result is a promise.
    // On the host a weight matrix is a GPU.js Input, which its kernels index as one flat typed
    // array (row views cost the cpu kernels 1.6x); a weight argument never changes type.
    const matrix = async (values: ArrayLike<number>, cols: number, rows: number): Promise<unknown> =>
      this.deviceResident ? await this.resident(Float32Array.from(values), cols, rows) : this.gpuJs.input(Float32Array.from(values), [cols, rows]);
    const vector = async (values: ArrayLike<number>): Promise<unknown> => {
      const v = Float32Array.from(values);
      if (!this.deviceResident) return v;
      this.counts.bytesUp += v.byteLength;
      return await this.run(this.shapedKernel(`vector ${v.length}`, K.copyVector, [v.length], { immutable: true }), v);
    };
    this.weights = [];
    for (const l of this.model.layers) {
      const rows = l.gates * l.hiddenSize;
      this.weights.push({ wih: await matrix(l.weightIh, l.inputSize, rows), whh: await matrix(l.weightHh, l.hiddenSize, rows), bih: await vector(l.biasIh), bhh: await vector(l.biasHh) });
    }
    const lastH = this.model.layers[this.model.layers.length - 1]!.hiddenSize;
    this.headWeights = { w: await matrix(this.model.head.weight, lastH, this.model.outputSize), b: await vector(this.model.head.bias) };
  }

  /**
   * `values` (`rows` rows of `cols`, row-major) as a [cols, outRows] kernel argument: on a
   * device, copied into a texture once (its bytes counted; rows past `rows` are padding that
   * kernels compute on and nobody reads); on the host, as row views padded with zero rows, the
   * shape kernel results have there (a cpu kernel reading past an array throws), so an
   * argument never changes type (GPU.js rebuilds a kernel whose argument type changes, and its
   * rebuilt kernels read LSTM state wrongly on GL and lost dynamicArguments on wasm).
   */
  private resident(values: Float32Array, cols: number, rows: number, outRows = rows): unknown {
    if (!this.deviceResident) {
      const zero = new Float32Array(cols);
      return Array.from({ length: Math.max(rows, outRows) }, (_, r) => (r < rows ? values.subarray(r * cols, (r + 1) * cols) : zero));
    }
    this.counts.bytesUp += cols * rows * 4;
    return this.run(this.shapedKernel(`copy ${cols}x${outRows}`, K.copyRows, [cols, outRows], { immutable: true }), this.gpuJs.input(values, [cols, rows]));
  }

  /**
   * A per-wave step's input or state rows (`rows` full rows, padding included) as a kernel
   * argument: on a device as `resident`; on the host a GPU.js Input, which the cpu and wasm
   * kernels index as one flat typed array (row views cost the cpu kernels 1.3x).
   */
  private stepArgument(values: Float32Array, cols: number, rows: number): unknown {
    return this.deviceResident ? this.resident(values, cols, rows) : this.gpuJs.input(values, [cols, rows]);
  }

  /**
   * A GPU.js kernel. `immutable` (device only): each call's result is a texture of its own,
   * freed by the caller, for results read after the same kernel runs again (a wave reads the
   * previous wave's update; an accumulator its last value); other kernels reuse one texture.
   * `dynamic`: argument sizes are uniforms (GL, WebGPU) or checked per call (wasm) rather than
   * compiled in. Only the cheap copy, slice and accumulate kernels take arguments of varying
   * size; the step's kernels always get the same shapes, because sizes read from uniforms made
   * the gate loops run at 0.4x on Mesa. GPU.js's cpu kernels index JavaScript arrays as they
   * come, and with the flag set read Inputs wrongly (NaN from the second row on).
   */
  private kernel(source: (...a: any[]) => number, output: number[], constants: Record<string, number>, options: { immutable?: boolean; dynamic?: boolean } = {}): AnyKernel {
    const pipeline = this.deviceResident;
    return this.gpu.createKernel(source, {
      output,
      constants,
      pipeline,
      immutable: pipeline && options.immutable === true,
      dynamicArguments: options.dynamic === true && this.mode !== 'cpu',
      precision: 'single',
      tactic: 'precision',
      loopMaxIterations: 1 << 16,
    });
  }

  /** A copy, slice, zeros, accumulate or slot kernel of one output shape (its arguments' sizes vary). */
  private shapedKernel(name: string, source: (...a: any[]) => number, output: number[], options: { immutable: boolean; constants?: Record<string, number>; dynamic?: boolean }): AnyKernel {
    let k = this.shaped.get(name);
    if (!k) this.shaped.set(name, (k = this.kernel(source, output, options.constants ?? {}, { immutable: options.immutable, dynamic: options.dynamic ?? true })));
    return k;
  }

  /** The slot table's view of this backend (see KernelHost). */
  private kernelHost(): KernelHost {
    return {
      shaped: (name, source, output, constants, immutable, dynamic) => this.shapedKernel(name, source, output, { immutable, constants, dynamic }),
      run: (kernel, ...args) => this.run(kernel, ...args),
      upload: (values, cols, rows) => this.resident(values, cols, rows),
      vector: (values) => {
        if (this.deviceResident) this.counts.bytesUp += values.byteLength;
        return values;
      },
      readBack: (value, cols, rows) => this.readBack(value, cols, rows),
      free,
      maxTextureSize: this.maxTextureRows(),
    };
  }

  /** One kernel call, counted. */
  private run(kernel: AnyKernel, ...args: unknown[]): any {
    this.counts.kernelCalls++;
    return kernel(...args);
  }

  /** A device result read back into host rows (counted); a host result is already rows. */
  private readBack(value: any, cols: number, rows: number): Float32Array[] | Promise<Float32Array[]> {
    if (!this.deviceResident) return value as Float32Array[];
    this.counts.readBacks++;
    this.counts.bytesDown += cols * rows * 4;
    return value.toArray();
  }

  /** Columns of layer k's state rows: [h, c] for an LSTM, [h] otherwise (what its update kernel writes). */
  private stateCols(k: number): number {
    const layer = this.model.layers[k]!;
    return layer.cell === 'lstm' ? 2 * layer.hiddenSize : layer.hiddenSize;
  }

  private bucketKernels(bucket: number): BucketKernels {
    const cached = this.buckets.get(bucket);
    if (cached) return cached;
    const { model } = this;
    const layers = model.layers.map((layer: LayerWeights): LayerKernels => {
      const H = layer.hiddenSize;
      const gateRows = layer.gates * H;
      const constants = { inputSize: layer.inputSize, hiddenSize: H, gateRows };
      const gates = layer.cell === 'gru' ? this.kernel(K.gatesSplit, [2 * gateRows, bucket], constants) : this.kernel(K.gatesSummed, [gateRows, bucket], constants);
      const updateSource = layer.cell === 'lstm' ? K.updateLstm : layer.cell === 'gru' ? K.updateGru : K.updateRnn;
      // Immutable: the next wave reads this wave's update while this kernel writes its own.
      const update = this.kernel(updateSource, [layer.cell === 'lstm' ? 2 * H : H, bucket], constants, { immutable: true });
      return { gates, update };
    });
    const lastH = model.layers[model.layers.length - 1]!.hiddenSize;
    const kernels: BucketKernels = {
      layers,
      head: this.kernel(K.headLogits, [model.outputSize, bucket], { hiddenSize: lastH }),
      input: new Float32Array(bucket * model.inputSize),
      layerRows: model.layers.map((_, k) => new Float32Array(bucket * this.stateCols(k))),
      verified: false,
    };
    this.buckets.set(bucket, kernels);
    return kernels;
  }

  /**
   * Layer k's state of `keys` keys from a segment-major `state` block into `rows` as its kernels
   * read it, [keys, cols] (an LSTM's row is h then c); the rest of `rows` is zeroed.
   */
  private packLayer(state: Float32Array, keys: number, k: number, rows: Float32Array): Float32Array {
    const { model } = this;
    const H = model.layers[k]!.hiddenSize;
    const cols = this.stateCols(k);
    const s = this.firstSegment[k]!;
    const hBase = keys * model.stateSegments[s]!.offset;
    for (let b = 0; b < keys; b++) rows.set(state.subarray(hBase + b * H, hBase + (b + 1) * H), b * cols);
    if (cols > H) {
      const cBase = keys * model.stateSegments[s + 1]!.offset;
      for (let b = 0; b < keys; b++) rows.set(state.subarray(cBase + b * H, cBase + (b + 1) * H), b * cols + H);
    }
    rows.fill(0, keys * cols);
    return rows;
  }

  /** One layer's step for a wave: gates, then the update, which is the layer's new state and the next layer's input. */
  private *layerStep(kb: BucketKernels, k: number, x: unknown, state: unknown): Generator<unknown, unknown, any> {
    const w = this.weights[k]!;
    const kernels = kb.layers[k]!;
    // The gates kernel's one texture is reused by its next call: not freed.
    const gates = yield this.run(kernels.gates, x, state, w.wih, w.whh, w.bih, w.bhh);
    return this.model.layers[k]!.cell === 'rnn' ? yield this.run(kernels.update, gates) : yield this.run(kernels.update, gates, state);
  }

  /**
   * The per-wave step as a plan of kernel calls. It yields each kernel result (a value, a
   * texture, or a promise on webgpu) and receives it back settled, so one plan serves the
   * synchronous GL, wasm and cpu kernels and the asynchronous WebGPU ones.
   */
  private *plan(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): Generator<unknown, void, any> {
    const { model } = this;
    const bucket = nextBucket(batch);
    const kb = this.bucketKernels(bucket);
    const I = model.inputSize;
    kb.input.set(input.subarray(0, batch * I));
    kb.input.fill(0, batch * I);
    const X = yield this.stepArgument(kb.input, I, bucket);
    let x: unknown = X;
    const updates: unknown[] = [];
    for (let k = 0; k < model.layers.length; k++) {
      const st = yield this.stepArgument(this.packLayer(state, batch, k, kb.layerRows[k]!), this.stateCols(k), bucket);
      const update = yield* this.layerStep(kb, k, x, st);
      free(st);
      updates.push(update);
      x = update;
    }
    free(X);
    const head = yield this.run(kb.head, x, this.headWeights.w, this.headWeights.b);
    const logits: Float32Array[] = yield this.readBack(head, model.outputSize, bucket);
    // Read back every layer's new state into the caller's segment-major `next` buffer.
    for (let k = 0; k < model.layers.length; k++) {
      const rows: Float32Array[] = yield this.readBack(updates[k], this.stateCols(k), bucket);
      free(updates[k]);
      this.unpackLayerRows(rows, k, 0, batch, batch, next, 0);
    }
    this.unpackOutputs(logits, 0, batch, output, 0);
    if (!kb.verified) {
      this.verifyKernels(kb);
      kb.verified = true;
    }
  }

  /**
   * Layer k's rows [from, from + n) (its h', and c' for an LSTM) into segment-major `into`, a
   * block of `blockKeys` keys starting at `base`.
   */
  private unpackLayerRows(rows: Float32Array[], k: number, from: number, n: number, blockKeys: number, into: Float32Array, base: number): void {
    const { model } = this;
    const H = model.layers[k]!.hiddenSize;
    const s = this.firstSegment[k]!;
    const hBase = base + blockKeys * model.stateSegments[s]!.offset;
    for (let b = 0; b < n; b++) into.set(rows[from + b]!.subarray(0, H), hBase + b * H);
    if (model.layers[k]!.cell === 'lstm') {
      const cBase = base + blockKeys * model.stateSegments[s + 1]!.offset;
      for (let b = 0; b < n; b++) into.set(rows[from + b]!.subarray(H, 2 * H), cBase + b * H);
    }
  }

  /** Logit rows [from, from + n) into `output` at row `at`, softmaxed if the head is softmax. */
  private unpackOutputs(logits: Float32Array[], from: number, n: number, output: Float32Array, at: number): void {
    const O = this.model.outputSize;
    for (let b = 0; b < n; b++) {
      const row = output.subarray((at + b) * O, (at + b + 1) * O);
      row.set(logits[from + b]!.subarray(0, O));
      if (this.model.head.kind === 'softmax') softmaxInPlace(row);
    }
  }

  /**
   * A whole micro-batch (see MicroBatch): its keys' state goes up once (wavesPlan does the
   * rest), and each key's state after it comes back in one read-back per layer.
   */
  private *microBatchPlan(mb: MicroBatch): Generator<unknown, void, any> {
    const U = mb.keys;
    const bucketU = nextBucket(U);
    const { latest } = yield* this.wavesPlan(mb, yield* this.uploadLayers(mb.state, U, bucketU));
    for (let k = 0; k < this.model.layers.length; k++) {
      const keys: Float32Array[] = yield this.readBack(latest[k], this.stateCols(k), bucketU);
      free(latest[k]);
      this.unpackLayerRows(keys, k, 0, U, U, mb.finalState, 0);
    }
  }

  /**
   * A micro-batch whose keys' state is in the slot table (see SlotMicroBatch): each layer's
   * starting rows are gathered from the table on the device (or are zeros, or the few uploaded
   * rows), the waves run (wavesPlan), and each key's final rows are scattered back into its slot
   * on the device. Up go the slot numbers and the input rows; down come the outputs (and every
   * row's state if asked).
   */
  private *slotMicroBatchPlan(mb: SlotMicroBatch): Generator<unknown, void, any> {
    const table = this.slotTable;
    const U = mb.keys;
    const bucketU = nextBucket(U);
    yield* table.ensure(mb.slots);
    // At least one row: a texture cannot be empty.
    const uploads = yield* this.uploadLayers(mb.uploads, mb.uploadCount, Math.max(mb.uploadCount, 1));
    const source = gatherSource(mb, bucketU);
    const initial: unknown[] = [];
    for (let k = 0; k < this.model.layers.length; k++) {
      // Counted per layer: GPU.js uploads an array argument with every kernel call.
      initial.push(yield* table.gather(k, this.host.vector(source), uploads[k], bucketU));
      free(uploads[k]);
    }
    const keep = mb.keepStates === true && !mb.states;
    const { latest, every } = yield* this.wavesPlan(mb, initial, keep);
    yield* this.scatterPlan(mb.slots, U, latest);
    if (keep) {
      const rows = waveStarts(mb.waveSizes).rows;
      mb.kept = new GpuKeptStates(this, every!, rows, this.model.stateSize * nextBucket(rows) * 4);
    }
  }

  /**
   * Each layer's rows of `keys` keys of a segment-major `state` block as a device argument
   * ([cols, outRows]; rows past `keys` are zeros): a micro-batch's starting state, uploads for
   * the slot table, or states written into it.
   */
  private *uploadLayers(state: Float32Array, keys: number, outRows: number): Generator<unknown, unknown[], any> {
    const layers: unknown[] = [];
    for (let k = 0; k < this.model.layers.length; k++) {
      const cols = this.stateCols(k);
      const rows = Math.max(keys, 1);
      layers.push(yield this.resident(this.packLayer(state, keys, k, new Float32Array(rows * cols)), cols, rows, outRows));
    }
    return layers;
  }

  /**
   * Rows of kept micro-batch states gathered on the device into one block per layer and read
   * back once each (see DeviceStateTable.readKept); blocks taller than a texture may be are read
   * in turns.
   */
  private *readKeptPlan(parts: readonly KeptRows[], into: Float32Array): Generator<unknown, void, any> {
    const total = parts.reduce((n, p) => n + p.rows.length, 0);
    const limit = Math.min(this.maxTextureRows(), 1 << 24);
    const S = this.model.stateSize;
    let done = 0;
    let i = 0;
    while (i < parts.length) {
      // As many whole parts as fit one block (a part is one micro-batch: always fits alone).
      const group: KeptRows[] = [];
      let rows = 0;
      while (i < parts.length && (group.length === 0 || rows + parts[i]!.rows.length <= limit)) {
        const part = parts[i++]!;
        if (!(part.kept instanceof GpuKeptStates) || part.kept.owner !== this) throw new Error('kept states from another backend');
        group.push(part);
        rows += part.rows.length;
      }
      if (rows === 0) continue;
      const block = new Float32Array(rows * S);
      yield* this.readKeptGroup(group, rows, block);
      // Segment-major for `total` rows: this group's rows start at row `done` of every segment.
      for (const seg of this.model.stateSegments) into.set(block.subarray(rows * seg.offset, rows * (seg.offset + seg.size)), total * seg.offset + done * seg.size);
      done += rows;
    }
  }

  private *readKeptGroup(group: readonly KeptRows[], rows: number, into: Float32Array): Generator<unknown, void, any> {
    const bucket = nextBucket(rows);
    const { host } = this;
    for (let k = 0; k < this.model.layers.length; k++) {
      const cols = this.stateCols(k);
      let acc: unknown = yield this.run(this.shapedKernel(`zeros ${cols}x${bucket}`, K.zeros, [cols, bucket], { immutable: true }));
      let start = 0;
      for (const part of group) {
        const kernel = this.shapedKernel(`gather rows ${cols}x${bucket}`, K.gatherRows, [cols, bucket], { immutable: true });
        const next = yield this.run(kernel, acc, (part.kept as GpuKeptStates).texture(k), host.vector(Float32Array.from(part.rows)), start, part.rows.length);
        free(acc);
        acc = next;
        start += part.rows.length;
      }
      const back: Float32Array[] = yield this.readBack(acc, cols, bucket);
      free(acc);
      this.unpackLayerRows(back, k, 0, rows, rows, into, 0);
    }
  }

  /** Each layer's rows of `latest` (key u's in row u) into the slot table at `slots[u]`; frees `latest`. */
  private *scatterPlan(slots: Int32Array, U: number, latest: unknown[]): Generator<unknown, void, any> {
    const order = Array.from({ length: U }, (_, u) => u).sort((a, b) => slots[a]! - slots[b]!);
    const { host } = this;
    const keys = yield* this.slotTable.keysOfSlots(host.vector(Float32Array.from(order, (u) => slots[u]!)), host.vector(Float32Array.from(order)), U);
    for (let k = 0; k < this.model.layers.length; k++) {
      yield* this.slotTable.scatter(k, latest[k], nextBucket(U), keys);
      free(latest[k]);
    }
    free(keys);
  }

  /** The state in `slots` (segment-major for slots.length keys) into `into`: one read-back per layer. */
  private *readSlotsPlan(slots: Int32Array, into: Float32Array): Generator<unknown, void, any> {
    const table = this.slotTable;
    for (const s of slots) if (!(s >= 0 && s < table.capacity)) throw new RangeError(`slot ${s} is not in the device's state table (${table.capacity} slots)`);
    if (slots.length === 0) return;
    const rows: Float32Array[][] = yield* table.read(slots);
    for (let k = 0; k < this.model.layers.length; k++) this.unpackLayerRows(rows[k]!, k, 0, slots.length, slots.length, into, 0);
  }

  /** Writes `state` (segment-major, one key per slot) into the slot table. */
  private *writeSlotsPlan(slots: Int32Array, state: Float32Array): Generator<unknown, void, any> {
    const U = slots.length;
    yield* this.slotTable.ensure(slots);
    yield* this.scatterPlan(slots, U, yield* this.uploadLayers(state, U, nextBucket(U)));
  }

  /**
   * A slot micro-batch too tall for one GL texture: its keys' state is read out of the table,
   * the waves go one by one (stepWavesOneByOne), and the final states are written back.
   */
  private async tallSlotMicroBatch(mb: SlotMicroBatch): Promise<void> {
    const { model } = this;
    const S = model.stateSize;
    const U = mb.keys;
    const inTable = Int32Array.from({ length: U }, (_, u) => u).filter((u) => mb.from[u] === FROM_TABLE);
    // Key u's row among those read from the table.
    const readRow = new Int32Array(U);
    inTable.forEach((u, r) => (readRow[u] = r));
    const read = new Float32Array(inTable.length * S);
    await this.drive(this.readSlotsPlan(Int32Array.from(inTable, (u) => mb.slots[u]!), read));
    const state = new Float32Array(U * S);
    const uploaded = (u: number): [Float32Array, number, number] | undefined => {
      const f = mb.from[u]!;
      if (f === FROM_TABLE) return [read, inTable.length, readRow[u]!];
      return f === FROM_ZEROS ? undefined : [mb.uploads, mb.uploadCount, f];
    };
    for (let u = 0; u < U; u++) {
      const src = uploaded(u);
      if (!src) continue;
      const [block, keys, row] = src;
      for (const seg of model.stateSegments) state.set(block.subarray(keys * seg.offset + row * seg.size, keys * seg.offset + (row + 1) * seg.size), U * seg.offset + u * seg.size);
    }
    const finalState = new Float32Array(U * S);
    // Too tall to keep every row's state in one texture: the caller gets them all instead.
    if (mb.keepStates && !mb.states) mb.states = new Float32Array(waveStarts(mb.waveSizes).rows * S);
    await stepWavesOneByOne(model, (n, x, st, next, out) => this.step(n, x, st, next, out), { ...mb, state, finalState });
    await this.drive(this.writeSlotsPlan(mb.slots, finalState));
  }

  /**
   * The waves of a micro-batch, starting from each layer's state rows `initial` ([cols, bucketU]
   * device values, consumed): its input rows go up once; wave by wave, its input rows are
   * sliced out on the device and each layer reads the previous wave's update where the key sits
   * (row b; narrowed to the wave's bucket when that shrinks), and each wave's outputs and new
   * states are placed into accumulators that stay on the device: the keys' latest states
   * ([cols, bucketU], returned for the caller to read back or scatter) and, if asked, every
   * row's. After the last wave, one read-back of the outputs and one per layer of every row's
   * states, unless they are to be kept on the device (`keep`: returned as `every`).
   */
  private *wavesPlan(mb: Pick<MicroBatch, 'keys' | 'waveSizes' | 'input' | 'states' | 'output'>, initial: unknown[], keep = false): Generator<unknown, { latest: unknown[]; every: unknown[] | undefined }, any> {
    const { model } = this;
    const I = model.inputSize;
    const { starts, rows: R } = waveStarts(mb.waveSizes);
    const bucketR = nextBucket(R);
    const bucketU = nextBucket(mb.keys);
    // Room for the last wave's slice past row R (its bucket's padding rows).
    const X = yield this.resident(mb.input, I, R, bucketR + bucketU);
    const prev = initial.map((state) => ({ state, rows: bucketU }));
    const latest: unknown[] = [];
    const every: unknown[] = [];
    const zeros = (cols: number, rows: number): unknown => this.run(this.shapedKernel(`zeros ${cols}x${rows}`, K.zeros, [cols, rows], { immutable: true }));
    for (let k = 0; k < model.layers.length; k++) {
      const cols = this.stateCols(k);
      latest.push(yield zeros(cols, bucketU));
      if (mb.states || keep) every.push(yield zeros(cols, bucketR));
    }
    let outputs: unknown = yield zeros(model.outputSize, bucketR);
    for (let w = 0; w < mb.waveSizes.length; w++) {
      const n = mb.waveSizes[w]!;
      const bucket = nextBucket(n);
      const kb = this.bucketKernels(bucket);
      let x: unknown = yield this.run(this.shapedKernel(`slice ${I}x${bucket}`, K.sliceRows, [I, bucket], { immutable: false }), X, starts[w]!);
      for (let k = 0; k < model.layers.length; k++) {
        const cols = this.stateCols(k);
        const p = prev[k]!;
        const state = p.rows === bucket ? p.state : yield this.run(this.shapedKernel(`narrow ${cols}x${bucket}`, K.sliceRows, [cols, bucket], { immutable: false }), p.state, 0);
        const update = yield* this.layerStep(kb, k, x, state);
        latest[k] = yield* this.accumulate(latest[k], update, cols, bucketU, 0, n);
        if (mb.states || keep) every[k] = yield* this.accumulate(every[k], update, cols, bucketR, starts[w]!, n);
        free(p.state);
        prev[k] = { state: update, rows: bucket };
        x = update;
      }
      const head = yield this.run(kb.head, x, this.headWeights.w, this.headWeights.b);
      outputs = yield* this.accumulate(outputs, head, model.outputSize, bucketR, starts[w]!, n);
    }
    for (const p of prev) free(p.state);
    free(X);
    const logits: Float32Array[] = yield this.readBack(outputs, model.outputSize, bucketR);
    free(outputs);
    this.unpackOutputs(logits, 0, R, mb.output, 0);
    if (mb.states && !keep) {
      for (let k = 0; k < model.layers.length; k++) {
        const rows: Float32Array[] = yield this.readBack(every[k], this.stateCols(k), bucketR);
        free(every[k]);
        for (let w = 0; w < mb.waveSizes.length; w++) this.unpackLayerRows(rows, k, starts[w]!, mb.waveSizes[w]!, mb.waveSizes[w]!, mb.states, starts[w]! * model.stateSize);
      }
    }
    return { latest, every: keep ? every : undefined };
  }

  /** `acc` with rows [start, start + n) from `wave` (a new accumulator; the old one is freed). */
  private *accumulate(acc: unknown, wave: unknown, cols: number, rows: number, start: number, n: number): Generator<unknown, unknown, any> {
    const next = yield this.run(this.shapedKernel(`accumulate ${cols}x${rows}`, K.accumulateRows, [cols, rows], { immutable: true }), acc, wave, start, n);
    free(acc);
    return next;
  }

  private verifyKernels(kb: BucketKernels): void {
    const expected = KERNEL_MODE_OF[this.mode];
    for (const k of [...kb.layers.flatMap((l) => [l.gates, l.update]), kb.head]) {
      const ran = k.kernel?.constructor?.mode;
      if (ran !== expected) {
        const why = k.kernel?.fallbackReason ? `: ${k.kernel.fallbackReason}` : '';
        throw new BackendUnavailableError(this.name, `gpu.js ran a kernel on "${ran}" instead of "${expected}"${why}`);
      }
    }
  }

  step(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): void | Promise<void> {
    this.counts.calls++;
    return this.drive(this.plan(batch, input, state, next, output));
  }

  /** Every wave of a micro-batch in one call (see MicroBatch); undefined where its probe failed (see probeMicroBatch). */
  stepMicroBatch: ((mb: MicroBatch) => void | Promise<void>) | undefined = (mb) => {
    this.counts.calls++;
    // A micro-batch whose accumulators would be taller than a GL texture may be (16,384 rows on
    // Mesa: the step bench's 8 waves of 8,192 keys) goes wave by wave, one call each.
    const rows = waveStarts(mb.waveSizes).rows;
    if (nextBucket(rows) + nextBucket(mb.keys) > this.maxTextureRows()) return stepWavesOneByOne(this.model, (n, x, st, next, out) => this.step(n, x, st, next, out), mb);
    return this.drive(this.microBatchPlan(mb));
  };

  /** A micro-batch whose keys' state is in the slot table (see SlotMicroBatch). */
  private stepSlots(mb: SlotMicroBatch): void | Promise<void> {
    this.counts.calls++;
    const rows = waveStarts(mb.waveSizes).rows;
    if (nextBucket(rows) + nextBucket(mb.keys) > this.maxTextureRows()) return this.tallSlotMicroBatch(mb);
    return this.drive(this.slotMicroBatchPlan(mb));
  }

  /**
   * Runs two micro-batches through the slot table beside the same waves stepped one by one from
   * the same states: the first from zeros and an uploaded row, into slots that make the table
   * grow; the second from the table, plus a slot that makes it grow again; then reads the slots
   * back. Where anything differs, the table is turned off (the backend still steps micro-batches
   * with the state going up and down) and `detail` says why.
   */
  private async probeSlotTable(): Promise<void> {
    const table = this.stateTable;
    if (!table || !this.stepMicroBatch) return;
    const { model } = this;
    const S = model.stateSize;
    const O = model.outputSize;
    const waveSizes = Int32Array.of(3, 2, 1);
    const rows = 6;
    const inputOf = (phase: number): Float32Array => Float32Array.from({ length: rows * model.inputSize }, (_, i) => Math.sin(i + phase));
    const uploads = Float32Array.from({ length: S }, (_, i) => 0.1 * Math.cos(i));
    const start = new Float32Array(3 * S);
    for (const seg of model.stateSegments) start.set(uploads.subarray(seg.offset, seg.offset + seg.size), 3 * seg.offset + seg.size);
    let worst = 0;
    const compare = (a: Float32Array, b: Float32Array): void => {
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    };
    try {
      const slots = Int32Array.of(5, 0, 70);
      const phases = [
        { from: Int32Array.of(FROM_ZEROS, 0, FROM_ZEROS), slots, state: start },
        { from: Int32Array.of(FROM_TABLE, FROM_TABLE, FROM_TABLE), slots, state: undefined as Float32Array | undefined },
      ];
      let before = start;
      for (const [p, phase] of phases.entries()) {
        const input = inputOf(p);
        const expected = { keys: 3, waveSizes, input, state: before, finalState: new Float32Array(3 * S), states: new Float32Array(rows * S), output: new Float32Array(rows * O) };
        await stepWavesOneByOne(model, (n, x, st, next, out) => this.step(n, x, st, next, out), expected);
        const got = { keys: 3, waveSizes, input, slots: phase.slots, from: phase.from, uploadCount: 1, uploads, states: new Float32Array(rows * S), output: new Float32Array(rows * O) };
        await table.step(got);
        compare(got.output, expected.output);
        compare(got.states, expected.states);
        // A slot past the table's rows makes it grow, keeping what it holds.
        if (p === 0) await this.drive(this.writeSlotsPlan(Int32Array.of(200), new Float32Array(S)));
        const back = new Float32Array(3 * S);
        await table.read(slots, back);
        compare(back, expected.finalState);
        before = expected.finalState;
      }
      if (!(worst <= 1e-5)) throw new Error(`it differs from stepping the waves one by one by ${worst}`);
    } catch (err) {
      this.stateTable = undefined;
      this.baseDetail += `; device state table off: ${(err as Error).message}`;
    }
  }

  /** The tallest texture a kernel may write: GL's limit, unbounded elsewhere. */
  private maxTextureRows(): number {
    if (this.mode !== 'headlessgl') return Infinity;
    try {
      const max = (this.gpu.Kernel?.features as { maxTextureSize?: unknown } | undefined)?.maxTextureSize;
      return typeof max === 'number' && max > 0 ? max : 4096;
    } catch {
      return 4096;
    }
  }

  /**
   * Runs a small micro-batch (3 keys, 1 to 3 events each) beside the same waves stepped one by
   * one. Where it fails or differs (a GPU.js target whose kernels lack something it needs:
   * immutable results, dynamic argument sizes), the path is turned off and `detail` says why,
   * so the backend still steps wave by wave rather than failing mid-stream.
   */
  private async probeMicroBatch(): Promise<void> {
    const { model } = this;
    const S = model.stateSize;
    const waveSizes = Int32Array.of(3, 2, 1);
    const { rows } = waveStarts(waveSizes);
    const input = Float32Array.from({ length: rows * model.inputSize }, (_, i) => Math.sin(i + 1));
    const state = Float32Array.from({ length: 3 * S }, (_, i) => 0.1 * Math.cos(i));
    const mb = { keys: 3, waveSizes, input, state, finalState: new Float32Array(3 * S), states: new Float32Array(rows * S), output: new Float32Array(rows * model.outputSize) };
    const waves = { ...mb, finalState: new Float32Array(3 * S), states: new Float32Array(rows * S), output: new Float32Array(rows * model.outputSize) };
    try {
      await this.stepMicroBatch!(mb);
      await stepWavesOneByOne(model, (n, x, st, next, out) => this.step(n, x, st, next, out), waves);
      let worst = 0;
      for (const [a, b] of [[mb.states, waves.states], [mb.finalState, waves.finalState], [mb.output, waves.output]] as const) for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      if (!(worst <= 1e-5)) throw new Error(`it differs from stepping the waves one by one by ${worst}`);
    } catch (err) {
      this.stepMicroBatch = undefined;
      this.baseDetail += `; micro-batch path off: ${(err as Error).message}`;
    }
  }

  /** Runs a plan: synchronously while kernels return values, asynchronously from the first promise (webgpu). */
  private drive(it: Generator<unknown, void, any>): void | Promise<void> {
    let r = it.next();
    while (!r.done) {
      if (r.value instanceof Promise) return this.finishAsync(it, r.value);
      r = it.next(r.value);
    }
  }

  private async finishAsync(it: Generator<unknown, void, any>, pending: Promise<unknown>): Promise<void> {
    let r = it.next(await pending);
    while (!r.done) r = it.next(await r.value);
  }

  dispose(): void {
    for (const kb of this.buckets.values()) {
      for (const k of [...kb.layers.flatMap((l) => [l.gates, l.update]), kb.head]) k.destroy?.();
    }
    this.slotTable.dispose();
    for (const k of this.shaped.values()) k.destroy?.();
    this.buckets.clear();
    this.shaped.clear();
    this.gpu.destroy?.();
    if (this.mode === 'webgpu' && !this.disposed) {
      releaseWebGpu(this.gpuJs).catch(() => {
        // The device is being torn down; a failure here has no one left to tell.
      });
    }
    this.disposed = true;
  }
}

export const gpuProvider: BackendProvider = {
  name: 'gpu',
  priority: 90,
  placement: 'device',
  summary: 'GPU.js WebGL shaders through headless-gl (a real GPU; Mesa llvmpipe is detected and reported)',
  create: (model) => GpuJsBackend.create('gpu', 'headlessgl', model),
};

export const webgpuProvider: BackendProvider = {
  name: 'webgpu',
  priority: 100,
  placement: 'device',
  summary: 'GPU.js WGSL compute shaders on Dawn (optional "webgpu" package; needs a Vulkan GPU)',
  create: (model) => GpuJsBackend.create('webgpu', 'webgpu', model),
};

export const webasmProvider: BackendProvider = {
  name: 'webasm',
  priority: 30,
  placement: 'host',
  summary: 'GPU.js WebAssembly kernels with f32x4 SIMD',
  create: (model) => GpuJsBackend.create('webasm', 'webasm', model),
};

export const cpuProvider: BackendProvider = {
  name: 'cpu',
  priority: 20,
  placement: 'host',
  summary: 'GPU.js kernels transpiled to JavaScript',
  create: (model) => GpuJsBackend.create('cpu', 'cpu', model),
};
