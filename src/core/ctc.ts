/**
 * Greedy CTC decoding, incrementally, frame by frame: the most probable symbol of each frame,
 * repeats collapsed (a symbol counts again only after a different one or a blank), blanks
 * dropped. Its state per key is a few floats beside the front end's, so a partial transcript
 * survives a restore exactly:
 *
 *   [0] the previous frame's symbol (the blank at first) | [1] symbols kept (T) | [2 .. 2 + MAX) them
 */
import { argmax } from './cells.js';

/** The CTC blank is class 0 of a CTC head. */
export const CTC_BLANK = 0;

/** Floats of a key's decoder state holding at most `maxSymbols` symbols. */
export const ctcStateSize = (maxSymbols: number): number => 2 + maxSymbols;

export function initCtcState(state: Float64Array): void {
  state.fill(0);
  state[0] = CTC_BLANK;
}

/**
 * Folds `rows` frames of class probabilities (rows x classes) into the decoder's state. Symbols
 * past its room are dropped (counted in the return value: a transcript that long is not a
 * digit string).
 */
export function ctcGreedyStep(outputs: Float32Array, rows: number, classes: number, state: Float64Array): number {
  const room = state.length - 2;
  let previous = state[0]!;
  let kept = state[1]!;
  let dropped = 0;
  for (let r = 0; r < rows; r++) {
    const best = argmax(outputs, r * classes, classes);
    if (best !== CTC_BLANK && best !== previous) {
      if (kept < room) state[2 + kept++] = best;
      else dropped++;
    }
    previous = best;
  }
  state[0] = previous;
  state[1] = kept;
  return dropped;
}

/** The decoder's transcript: its symbols' labels joined, spaces collapsed and trimmed. */
export function ctcTranscript(state: Float64Array, labels: readonly string[]): string {
  let text = '';
  for (let i = 0; i < state[1]!; i++) text += labels[state[2 + i]!]!;
  return text.replace(/\s+/g, ' ').trim();
}
