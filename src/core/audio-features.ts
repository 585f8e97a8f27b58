/**
 * A streaming log-mel front end: 16-bit audio in, in chunks of any size, and model input rows
 * out. Per key it keeps only the samples not yet framed and the frames not yet stacked, in a
 * Float64Array (the key's pipeline state), so the rows never depend on how the audio was cut:
 * the same samples give the same rows, bit for bit, in one chunk or in a thousand.
 *
 * Per frame (a 25 ms window every 10 ms at 16 kHz): the frame's mean removed, pre-emphasis
 * (0.97, within the frame), a Hann window, a 512-point FFT (fft.js: radix-4, the fastest
 * well-kept FFT on npm, and used as is), the power spectrum, 40 triangular mel filters from 20
 * to 7,600 Hz, and the log (of energy + 1, so that digital silence is 0). Three consecutive
 * frames are stacked into one row of 120 values, and one row is made every third frame: the
 * model steps at 33 Hz rather than 100, a third of the work, with the same information.
 */
import FFT from 'fft.js';

export interface LogMelConfig {
  readonly sampleRate: number;
  readonly windowSamples: number;
  readonly hopSamples: number;
  readonly fftSize: number;
  readonly melBands: number;
  readonly lowHz: number;
  readonly highHz: number;
  readonly preEmphasis: number;
  /** Frames per model input row (and the step between rows, in frames). */
  readonly stack: number;
}

export const LOG_MEL_16K: LogMelConfig = Object.freeze({
  sampleRate: 16_000,
  windowSamples: 400,
  hopSamples: 160,
  fftSize: 512,
  melBands: 40,
  lowHz: 20,
  highHz: 7600,
  preEmphasis: 0.97,
  stack: 3,
});

const melOf = (hz: number): number => 1127 * Math.log(1 + hz / 700);

/** Each mel band's first FFT bin and its weights (HTK's triangles on the mel scale). */
function melFilters(c: LogMelConfig): { first: Int32Array; weights: Float64Array[] } {
  const bins = c.fftSize / 2 + 1;
  const lo = melOf(c.lowHz);
  const hi = melOf(c.highHz);
  const centres = Array.from({ length: c.melBands + 2 }, (_, k) => lo + ((hi - lo) * k) / (c.melBands + 1));
  const first = new Int32Array(c.melBands);
  const weights: Float64Array[] = [];
  for (let m = 0; m < c.melBands; m++) {
    const [left, centre, right] = [centres[m]!, centres[m + 1]!, centres[m + 2]!];
    const w: number[] = [];
    let start = -1;
    for (let b = 0; b < bins; b++) {
      const mel = melOf((b * c.sampleRate) / c.fftSize);
      const v = mel <= left || mel >= right ? 0 : mel <= centre ? (mel - left) / (centre - left) : (right - mel) / (right - centre);
      if (v > 0) {
        if (start < 0) start = b;
        w[b - start] = v;
      } else if (start >= 0) break;
    }
    first[m] = Math.max(0, start);
    weights.push(Float64Array.from(w, (v) => v ?? 0));
  }
  return { first, weights };
}

/**
 * The front end for one configuration; its state per key is `stateSize` floats:
 *
 *   [0] samples left over (L < windowSamples) | [1 .. windowSamples) those samples |
 *   [windowSamples] frames pending a row (P < stack) | then P x melBands of them
 */
export class LogMelFrontEnd {
  /** Floats of a key's front-end state. */
  readonly stateSize: number;
  /** Values in one model input row (stack x melBands, frame by frame). */
  readonly rowSize: number;
  private readonly fft: FFT;
  private readonly window: Float64Array;
  private readonly filters: { first: Int32Array; weights: Float64Array[] };
  private readonly frame: Float64Array;
  private readonly spectrum: number[];
  private readonly mel: Float64Array;
  private work: Float64Array;

  constructor(readonly config: LogMelConfig = LOG_MEL_16K) {
    const { windowSamples: W, fftSize, melBands, stack } = config;
    this.stateSize = W + 1 + (stack - 1) * melBands;
    this.rowSize = stack * melBands;
    this.fft = new FFT(fftSize);
    this.window = Float64Array.from({ length: W }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (W - 1)));
    this.filters = melFilters(config);
    this.frame = new Float64Array(fftSize);
    this.spectrum = this.fft.createComplexArray() as number[];
    this.mel = new Float64Array(melBands);
    this.work = new Float64Array(W + 16_000);
  }

  /** The most rows an event of `samples` samples can give (its frames, and those pending before it). */
  maxRows(samples: number): number {
    const { hopSamples: H, stack } = this.config;
    // At most windowSamples - 1 samples wait from before: the frames end within the new ones.
    const frames = samples > 0 ? Math.floor((samples - 1) / H) + 1 : 0;
    return Math.floor((frames + stack - 1) / stack);
  }

  /** A new key: nothing left over, nothing pending. */
  init(state: Float64Array): void {
    state.fill(0, 0, this.stateSize);
  }

  /**
   * Appends `samples` (16-bit values) to the key's stream: frames every complete window, stacks
   * them, and writes each complete row into `out` (rowSize values each); returns the rows.
   */
  advance(state: Float64Array, samples: ArrayLike<number>, out: Float64Array): number {
    const { windowSamples: W, hopSamples: H, melBands: M, stack } = this.config;
    const left = state[0]!;
    const total = left + samples.length;
    if (this.work.length < total) this.work = new Float64Array(total);
    const work = this.work;
    for (let i = 0; i < left; i++) work[i] = state[1 + i]!;
    for (let i = 0; i < samples.length; i++) work[left + i] = samples[i]!;
    const pendingAt = W + 1;
    const mel = this.mel;
    let pending = state[W]!;
    let rows = 0;
    let start = 0;
    for (; start + W <= total; start += H) {
      this.logMel(work, start, mel);
      if (pending < stack - 1) {
        state.set(mel, pendingAt + pending * M);
        pending++;
        continue;
      }
      // This frame completes a row: the pending frames, then it.
      const row = rows * this.rowSize;
      for (let i = 0; i < pending * M; i++) out[row + i] = state[pendingAt + i]!;
      out.set(mel, row + pending * M);
      rows++;
      pending = 0;
    }
    state[0] = total - start;
    for (let i = start; i < total; i++) state[1 + i - start] = work[i]!;
    // Unused room zeroed: the state, and so its changelog bytes, depend on the samples alone,
    // not on how they were cut.
    state.fill(0, 1 + total - start, W);
    state[W] = pending;
    state.fill(0, pendingAt + pending * M, this.stateSize);
    return rows;
  }

  /** The log-mel values of the window at work[start ..], into `into`. */
  private logMel(work: Float64Array, start: number, into: Float64Array): void {
    const { windowSamples: W, preEmphasis, melBands } = this.config;
    const frame = this.frame;
    let mean = 0;
    for (let i = 0; i < W; i++) mean += work[start + i]!;
    mean /= W;
    let previous = work[start]! - mean;
    for (let i = 0; i < W; i++) {
      const v = work[start + i]! - mean;
      frame[i] = (v - preEmphasis * previous) * this.window[i]!;
      previous = v;
    }
    frame.fill(0, W);
    this.fft.realTransform(this.spectrum, frame);
    const spectrum = this.spectrum;
    const { first, weights } = this.filters;
    for (let m = 0; m < melBands; m++) {
      const w = weights[m]!;
      const b0 = first[m]!;
      let energy = 0;
      for (let k = 0; k < w.length; k++) {
        const re = spectrum[2 * (b0 + k)]!;
        const im = spectrum[2 * (b0 + k) + 1]!;
        energy += w[k]! * (re * re + im * im);
      }
      into[m] = Math.log(energy + 1);
    }
  }
}
