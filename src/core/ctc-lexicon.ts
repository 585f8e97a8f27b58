/**
 * CTC prefix beam search constrained to a lexicon, incrementally, frame by frame: a hypothesis
 * may only spell words of the lexicon (a digit string: "zero" ... "nine"), a space only after a
 * whole word, and a final transcript ends on one. Where greedy decoding takes each frame's most
 * probable symbol, this keeps the `beam` most probable prefixes with their probability of ending
 * in a blank (pb) and in a symbol (pnb), merged when two paths reach the same prefix.
 *
 * The beam lives in the key's decoder state, so a partial transcript and everything it may still
 * become survive a restore exactly:
 *
 *   [0] hypotheses (n) | n slots of [pb, pnb, length, trie node, hash, symbols x maxSymbols]
 */

/** The CTC blank is class 0 of a CTC head. */
const BLANK = 0;
/** Symbols less probable than this in a frame are not tried (the blank dominates most frames). */
const PRUNE = 1e-3;
const HEAD = 5;

interface Candidate {
  parent: number;
  /** The symbol appended to the parent's prefix, or -1 for the parent's prefix itself. */
  symbol: number;
  pb: number;
  pnb: number;
  hash: number;
  length: number;
  node: number;
}

export class LexiconBeamDecoder {
  /** Floats of a key's decoder state. */
  readonly stateSize: number;
  private readonly slot: number;
  /** children[node * classes + c]: the node after symbol c, or -1. */
  private readonly children: Int32Array;
  private readonly isWord: Uint8Array;
  private readonly space: number;
  private readonly candidates: Candidate[] = [];

  constructor(
    private readonly labels: readonly string[],
    words: readonly string[],
    private readonly beam = 8,
    private readonly maxSymbols = 64,
  ) {
    this.slot = HEAD + maxSymbols;
    this.stateSize = 1 + beam * this.slot;
    this.space = labels.indexOf(' ');
    const C = labels.length;
    const children: number[] = new Array<number>(C).fill(-1);
    const ends: number[] = [0];
    for (const word of words) {
      let node = 0;
      for (const ch of word) {
        const c = labels.indexOf(ch);
        if (c <= BLANK) throw new Error(`lexicon word "${word}": "${ch}" is not a symbol of the model's head`);
        if (children[node * C + c] === -1) {
          children[node * C + c] = ends.length;
          ends.push(0);
          children.push(...new Array<number>(C).fill(-1));
        }
        node = children[node * C + c]!;
      }
      ends[node] = 1;
    }
    this.children = Int32Array.from(children);
    this.isWord = Uint8Array.from(ends);
  }

  /** A new key: one empty hypothesis, certain. */
  init(state: Float64Array): void {
    state.fill(0);
    state[0] = 1;
    state[1] = 1; // pb of the empty prefix
  }

  /** The node after `c` from `node`, or -1 where the lexicon does not go on with it. */
  private next(node: number, c: number): number {
    if (c === this.space) return this.isWord[node] === 1 ? 0 : -1;
    return this.children[node * this.labels.length + c]!;
  }

  /** Folds `rows` frames of class probabilities (rows x classes) into the beam in `state`. */
  step(outputs: Float32Array, rows: number, state: Float64Array): void {
    const C = this.labels.length;
    for (let r = 0; r < rows; r++) this.frame(outputs.subarray(r * C, (r + 1) * C), state);
  }

  private candidate(parent: number, symbol: number, pb: number, pnb: number, hash: number, length: number, node: number): void {
    // Another path to the same prefix adds to it. A prefix is known by its length, its place in
    // the lexicon and a 31-bit polynomial hash of its symbols: among the few dozen candidates of
    // a frame a collision is not worth a symbol-by-symbol check.
    for (const k of this.candidates) {
      if (k.hash === hash && k.length === length && k.node === node) {
        k.pb += pb;
        k.pnb += pnb;
        return;
      }
    }
    this.candidates.push({ parent, symbol, pb, pnb, hash, length, node });
  }

  private frame(p: Float32Array, state: Float64Array): void {
    const n = state[0]!;
    const S = this.slot;
    this.candidates.length = 0;
    for (let h = 0; h < n; h++) {
      const at = 1 + h * S;
      const [pb, pnb, length, node, hash] = [state[at]!, state[at + 1]!, state[at + 2]!, state[at + 3]!, state[at + 4]!];
      const last = length > 0 ? state[at + HEAD + length - 1]! : -1;
      // The same prefix: a blank, or the last symbol again (collapsed).
      this.candidate(h, -1, (pb + pnb) * p[BLANK]!, last >= 0 ? pnb * p[last]! : 0, hash, length, node);
      if (length >= this.maxSymbols) continue;
      for (let c = 1; c < p.length; c++) {
        const pc = p[c]!;
        if (pc < PRUNE) continue;
        const to = this.next(node, c);
        if (to < 0) continue;
        // After the same symbol it is a new one only across a blank.
        const pnbNew = c === last ? pb * pc : (pb + pnb) * pc;
        if (pnbNew > 0) this.candidate(h, c, 0, pnbNew, (hash * 31 + c) % 2147483647, length + 1, to);
      }
    }
    const kept = this.candidates.sort((a, b) => b.pb + b.pnb - (a.pb + a.pnb)).slice(0, this.beam);
    const total = kept.reduce((s, k) => s + k.pb + k.pnb, 0) || 1;
    // The parents' symbols first: the new slots are written over the old ones.
    const parents = kept.map((k) => state.slice(1 + k.parent * S + HEAD, 1 + k.parent * S + HEAD + k.length - (k.symbol >= 0 ? 1 : 0)));
    kept.forEach((k, i) => {
      const at = 1 + i * S;
      state[at] = k.pb / total;
      state[at + 1] = k.pnb / total;
      state[at + 2] = k.length;
      state[at + 3] = k.node;
      state[at + 4] = k.hash;
      state.set(parents[i]!, at + HEAD);
      if (k.symbol >= 0) state[at + HEAD + k.length - 1] = k.symbol;
    });
    state[0] = kept.length;
  }

  /** The most probable prefix's text; `final`: the most probable that ends on a whole word. */
  transcript(state: Float64Array, final: boolean): string {
    const n = state[0]!;
    const S = this.slot;
    let best = -1;
    let bestP = -1;
    for (let h = 0; h < n; h++) {
      const at = 1 + h * S;
      const node = state[at + 3]!;
      const complete = this.isWord[node] === 1 || (node === 0 && state[at + 2]! === 0);
      const prob = state[at]! + state[at + 1]!;
      if ((!final || complete) && prob > bestP) [best, bestP] = [h, prob];
    }
    if (best < 0) best = 0;
    const at = 1 + best * S;
    let text = '';
    for (let i = 0; i < state[at + 2]!; i++) text += this.labels[state[at + HEAD + i]!]!;
    return text;
  }
}
