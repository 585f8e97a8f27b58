/**
 * The "careful Float32Array loop" baseline: one LSTM or GRU step for B keys in plain
 * TypeScript, float32 storage, weights row-major so the inner loop walks memory linearly.
 * Benchmark-only; it is what a hand-written CPU path would reach.
 */
import type { LayerWeights } from '../src/core/model.js';

export class Float32LoopCell {
  private readonly wih: Float32Array;
  private readonly whh: Float32Array;
  private readonly bih: Float32Array;
  private readonly bhh: Float32Array;
  private readonly gx: Float32Array;
  private readonly gh: Float32Array;

  constructor(private readonly layer: LayerWeights) {
    this.wih = Float32Array.from(layer.weightIh);
    this.whh = Float32Array.from(layer.weightHh);
    this.bih = Float32Array.from(layer.biasIh);
    this.bhh = Float32Array.from(layer.biasHh);
    this.gx = new Float32Array(layer.gates * layer.hiddenSize);
    this.gh = new Float32Array(layer.gates * layer.hiddenSize);
  }

  /** x: [B, I]; h, c: [B, H] updated in place (c only for LSTM). */
  step(batch: number, x: Float32Array, h: Float32Array, c: Float32Array): void {
    const { inputSize: I, hiddenSize: H, gates, cell } = this.layer;
    const { wih, whh, bih, bhh, gx, gh } = this;
    const rows = gates * H;
    for (let b = 0; b < batch; b++) {
      const xo = b * I;
      const ho = b * H;
      for (let r = 0; r < rows; r++) {
        let sx = bih[r]!;
        const wo = r * I;
        for (let j = 0; j < I; j++) sx += wih[wo + j]! * x[xo + j]!;
        let sh = bhh[r]!;
        const uo = r * H;
        for (let j = 0; j < H; j++) sh += whh[uo + j]! * h[ho + j]!;
        gx[r] = sx;
        gh[r] = sh;
      }
      if (cell === 'lstm') {
        for (let j = 0; j < H; j++) {
          const i = 1 / (1 + Math.exp(-(gx[j]! + gh[j]!)));
          const f = 1 / (1 + Math.exp(-(gx[H + j]! + gh[H + j]!)));
          const g = Math.tanh(gx[2 * H + j]! + gh[2 * H + j]!);
          const o = 1 / (1 + Math.exp(-(gx[3 * H + j]! + gh[3 * H + j]!)));
          const cn = f * c[ho + j]! + i * g;
          c[ho + j] = cn;
          h[ho + j] = o * Math.tanh(cn);
        }
      } else if (cell === 'gru') {
        for (let j = 0; j < H; j++) {
          const r = 1 / (1 + Math.exp(-(gx[j]! + gh[j]!)));
          const z = 1 / (1 + Math.exp(-(gx[H + j]! + gh[H + j]!)));
          const n = Math.tanh(gx[2 * H + j]! + r * gh[2 * H + j]!);
          h[ho + j] = (1 - z) * n + z * h[ho + j]!;
        }
      } else {
        for (let j = 0; j < H; j++) h[ho + j] = Math.tanh(gx[j]! + gh[j]!);
      }
    }
  }
}
