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
import type { BackendName, BackendProvider, StepBackend } from './types.js';

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
  /** Padded host buffers: input [bucket, I], and per segment [bucket, size]. */
  readonly input: Float32Array;
  readonly segments: Float32Array[];
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

export class GpuJsBackend implements StepBackend {
  private readonly buckets = new Map<number, BucketKernels>();
  private disposed = false;
  /** GL and WebGPU keep intermediates on the device between kernels of one step. */
  private readonly deviceResident: boolean;
  private readonly weights: { wih: unknown; whh: unknown; bih: Float32Array; bhh: Float32Array }[];
  private readonly headWeights: { w: unknown; b: Float32Array };

  private constructor(
    readonly name: BackendName,
    readonly detail: string,
    private readonly model: RnnModel,
    private readonly mode: GpuJsMode,
    private readonly gpu: any,
    private readonly gpuJs: any,
  ) {
    this.deviceResident = mode === 'headlessgl' || mode === 'webgpu';
    const { input } = this.gpuJs;
    // Weights go in once as GPU.js inputs with their 2D shape, indexed w[row][col] in kernels.
    this.weights = model.layers.map((l) => {
      const rows = l.gates * l.hiddenSize;
      return {
        wih: input(Float32Array.from(l.weightIh), [l.inputSize, rows]),
        whh: input(Float32Array.from(l.weightHh), [l.hiddenSize, rows]),
        bih: Float32Array.from(l.biasIh),
        bhh: Float32Array.from(l.biasHh),
      };
    });
    const lastH = model.layers[model.layers.length - 1]!.hiddenSize;
    this.headWeights = {
      w: input(Float32Array.from(model.head.weight), [lastH, model.outputSize]),
      b: Float32Array.from(model.head.bias),
    };
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
    // Compile and run the smallest bucket now, so a backend that cannot run fails at selection.
    try {
      const probe = backend.step(1, new Float32Array(model.inputSize), new Float32Array(model.stateSize), new Float32Array(model.stateSize), new Float32Array(model.outputSize));
      if (probe) await probe;
    } catch (err) {
      backend.dispose();
      throw err;
    }
    return backend;
  }

  private kernel(source: (...a: any[]) => number, output: [number, number], constants: Record<string, number>, pipeline: boolean): AnyKernel {
    return this.gpu.createKernel(source, {
      output,
      constants,
      pipeline,
      precision: 'single',
      tactic: 'precision',
      loopMaxIterations: 1 << 16,
    });
  }

  private bucketKernels(bucket: number): BucketKernels {
    const cached = this.buckets.get(bucket);
    if (cached) return cached;
    const { model, deviceResident } = this;
    const layers = model.layers.map((layer: LayerWeights): LayerKernels => {
      const H = layer.hiddenSize;
      const gateRows = layer.gates * H;
      const constants = { inputSize: layer.inputSize, hiddenSize: H, gateRows };
      const gates =
        layer.cell === 'gru'
          ? this.kernel(K.gatesSplit, [2 * gateRows, bucket], constants, deviceResident)
          : this.kernel(K.gatesSummed, [gateRows, bucket], constants, deviceResident);
      const update =
        layer.cell === 'lstm'
          ? this.kernel(K.updateLstm, [2 * H, bucket], constants, deviceResident)
          : this.kernel(layer.cell === 'gru' ? K.updateGru : K.updateRnn, [H, bucket], constants, deviceResident);
      return { gates, update };
    });
    const lastH = model.layers[model.layers.length - 1]!.hiddenSize;
    const head = this.kernel(K.headLogits, [model.outputSize, bucket], { hiddenSize: lastH }, false);
    const kernels: BucketKernels = {
      layers,
      head,
      input: new Float32Array(bucket * model.inputSize),
      segments: model.stateSegments.map((s) => new Float32Array(bucket * s.size)),
      verified: false,
    };
    this.buckets.set(bucket, kernels);
    return kernels;
  }

  /**
   * The step as a plan of kernel calls. It yields each kernel result (a value, a texture, or a
   * promise on webgpu) and receives it back settled, so one plan serves the synchronous GL,
   * wasm and cpu kernels and the asynchronous WebGPU ones.
   */
  private *plan(batch: number, input: Float32Array, state: Float32Array, next: Float32Array, output: Float32Array): Generator<unknown, void, any> {
    const { model } = this;
    const { input: inputArg } = this.gpuJs;
    const bucket = nextBucket(batch);
    const kb = this.bucketKernels(bucket);
    const I = model.inputSize;
    kb.input.set(input.subarray(0, batch * I));
    kb.input.fill(0, batch * I);
    model.stateSegments.forEach((seg, s) => {
      const buf = kb.segments[s]!;
      buf.set(state.subarray(batch * seg.offset, batch * (seg.offset + seg.size)));
      buf.fill(0, batch * seg.size);
    });

    let x: unknown = inputArg(kb.input, [I, bucket]);
    const updates: unknown[] = [];
    let s = 0;
    for (let k = 0; k < model.layers.length; k++) {
      const layer = model.layers[k]!;
      const w = this.weights[k]!;
      const H = layer.hiddenSize;
      const h = inputArg(kb.segments[s]!, [H, bucket]);
      const gates = yield kb.layers[k]!.gates(x, h, w.wih, w.whh, w.bih, w.bhh);
      const update =
        layer.cell === 'lstm'
          ? yield kb.layers[k]!.update(gates, inputArg(kb.segments[s + 1]!, [H, bucket]))
          : layer.cell === 'gru'
            ? yield kb.layers[k]!.update(gates, h)
            : yield kb.layers[k]!.update(gates);
      updates.push(update);
      x = update;
      s += layer.cell === 'lstm' ? 2 : 1;
    }
    const logits: Float32Array[] = yield kb.head(x, this.headWeights.w, this.headWeights.b);

    // Read back every layer's new state into the caller's segment-major `next` buffer.
    s = 0;
    for (let k = 0; k < model.layers.length; k++) {
      const layer = model.layers[k]!;
      const H = layer.hiddenSize;
      const rows: Float32Array[] = this.deviceResident ? yield (updates[k] as any).toArray() : (updates[k] as Float32Array[]);
      const hSeg = model.stateSegments[s]!;
      const hBase = batch * hSeg.offset;
      for (let b = 0; b < batch; b++) next.set(rows[b]!.subarray(0, H), hBase + b * H);
      if (layer.cell === 'lstm') {
        const cBase = batch * model.stateSegments[s + 1]!.offset;
        for (let b = 0; b < batch; b++) next.set(rows[b]!.subarray(H, 2 * H), cBase + b * H);
        s += 2;
      } else {
        s += 1;
      }
    }
    const O = model.outputSize;
    for (let b = 0; b < batch; b++) {
      const row = output.subarray(b * O, (b + 1) * O);
      row.set(logits[b]!.subarray(0, O));
      if (model.head.kind === 'softmax') softmaxInPlace(row);
    }
    if (!kb.verified) {
      this.verifyKernels(kb);
      kb.verified = true;
    }
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
    const it = this.plan(batch, input, state, next, output);
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
    this.buckets.clear();
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
