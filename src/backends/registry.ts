/**
 * Backend registry and resolver, after onnxruntime-web's backend-impl: providers register with a
 * priority; `auto` tries them best first and keeps the first that builds AND runs a probe step.
 * Every provider it skipped is returned with the reason it failed, logged, and counted; an
 * explicitly requested backend that fails is an error, never a quiet substitution.
 */
import { BackendUnavailableError } from '../core/errors.js';
import type { RnnModel } from '../core/model.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import { cpuProvider, detectGlRenderer, gpuProvider, webasmProvider, webgpuProvider } from './gpujs.js';
import { onnxProvider } from './onnx.js';
import { referenceProvider } from './reference.js';
import type { BackendChoice, BackendName, BackendOptions, BackendProvider, StepBackend } from './types.js';

const providers = new Map<BackendName, BackendProvider>();

export function registerBackend(provider: BackendProvider): void {
  providers.set(provider.name, provider);
}

for (const p of [webgpuProvider, gpuProvider, onnxProvider, webasmProvider, cpuProvider, referenceProvider]) registerBackend(p);

/** Registered providers, best first. */
export function listBackends(): BackendProvider[] {
  return [...providers.values()].sort((a, b) => b.priority - a.priority);
}

export interface SkippedBackend {
  readonly name: BackendName;
  readonly reason: string;
}

export interface BackendResolution {
  readonly backend: StepBackend;
  readonly requested: BackendChoice;
  /** Backends `auto` tried before the chosen one, each with why it was not used. */
  readonly skipped: readonly SkippedBackend[];
}

export interface ResolveOptions extends BackendOptions {
  readonly logger?: Logger;
  /**
   * Let `auto` pick the `gpu` backend on a software GL renderer (Mesa llvmpipe). Off by default:
   * llvmpipe is CPU code and slower than the onnx backend; tests that exercise real WebGL
   * shaders request `gpu` explicitly instead.
   */
  readonly allowSoftwareGl?: boolean;
}

export async function resolveBackend(requested: BackendChoice, model: RnnModel, options: ResolveOptions = {}): Promise<BackendResolution> {
  const logger = options.logger ?? silentLogger;
  if (requested !== 'auto') {
    const provider = providers.get(requested);
    if (!provider) throw new BackendUnavailableError(requested, `unknown backend; expected one of: auto, ${listBackends().map((p) => p.name).join(', ')}`);
    const backend = await provider.create(model, options);
    logger.info({ backend: backend.name, detail: backend.detail }, 'backend selected');
    return { backend, requested, skipped: [] };
  }
  const skipped: SkippedBackend[] = [];
  for (const provider of listBackends()) {
    try {
      const backend = await provider.create(model, options);
      if (provider.name === 'gpu' && !options.allowSoftwareGl) {
        const renderer = detectGlRenderer();
        if (renderer.software) {
          backend.dispose();
          throw new BackendUnavailableError('gpu', renderer.description);
        }
      }
      logger.info({ backend: backend.name, detail: backend.detail, skipped }, 'backend selected');
      return { backend, requested, skipped };
    } catch (err) {
      const reason = err instanceof BackendUnavailableError ? err.reason : (err as Error).message;
      skipped.push({ name: provider.name, reason });
      logger.warn({ backend: provider.name, reason, fallbacks: skipped.length }, 'backend fallback');
    }
  }
  // Unreachable while the reference backend is registered; kept for a registry without it.
  throw new BackendUnavailableError('auto', `no backend works here: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}
