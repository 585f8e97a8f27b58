/**
 * GPU.js kernel sources for one cell step over a batch of keys.
 *
 * Every kernel's output is [columns, batch]: thread.y is the key, thread.x the unit, so one
 * kernel call covers all keys of the batch. Per layer there are two calls: a `gates` kernel (the
 * affine part, W_ih x + W_hh h + biases, where all the FLOPs are) and an `update` kernel (the
 * pointwise gate nonlinearities). The head is one more call. Gate order is PyTorch's (model.ts).
 *
 * These functions are transpiled by GPU.js to GLSL, WGSL, WebAssembly or JavaScript, so they
 * use only what GPU.js can translate: numbers, 2D indexing, loops bounded by constants, Math.exp.
 * tanh is written as 2 / (1 + e^(-2v)) - 1 because GLSL ES 1.0 has no tanh; it saturates
 * correctly to +-1 in float32 (e^(-2v) overflowing to Infinity gives -1).
 */
/* eslint-disable @typescript-eslint/no-explicit-any */

interface KernelThis {
  thread: { x: number; y: number };
  constants: { inputSize: number; hiddenSize: number; gateRows: number };
}

/**
 * rnn and lstm: output [gateRows, B], one pre-activation per gate row and key. `h` is the
 * layer's state as `update` writes it (an LSTM's row is [h, c]; only h is read here).
 */
export function gatesSummed(this: KernelThis, x: any, h: any, wih: any, whh: any, bih: any, bhh: any): number {
  const r = this.thread.x;
  const b = this.thread.y;
  let s = bih[r] + bhh[r];
  for (let j = 0; j < this.constants.inputSize; j++) {
    s += wih[r][j] * x[b][j];
  }
  for (let j = 0; j < this.constants.hiddenSize; j++) {
    s += whh[r][j] * h[b][j];
  }
  return s;
}

/**
 * gru: output [2 * gateRows, B]. Rows [0, 3H) are W_ih x + b_ih, rows [3H, 6H) are
 * W_hh h + b_hh, kept apart because the reset gate scales only the hidden part of n.
 */
export function gatesSplit(this: KernelThis, x: any, h: any, wih: any, whh: any, bih: any, bhh: any): number {
  const r = this.thread.x;
  const b = this.thread.y;
  const rows = this.constants.gateRows;
  if (r < rows) {
    let s = bih[r];
    for (let j = 0; j < this.constants.inputSize; j++) {
      s += wih[r][j] * x[b][j];
    }
    return s;
  }
  let s = bhh[r - rows];
  for (let j = 0; j < this.constants.hiddenSize; j++) {
    s += whh[r - rows][j] * h[b][j];
  }
  return s;
}

/** rnn: output [H, B]. */
export function updateRnn(this: KernelThis, g: any): number {
  return 2 / (1 + Math.exp(-2 * g[this.thread.y][this.thread.x])) - 1;
}

/**
 * lstm: output [2H, B]; columns [0, H) are h', [H, 2H) are c' (so a row starts with h', and the
 * next layer reads it as its input). `state` is the layer's state in the same layout.
 */
export function updateLstm(this: KernelThis, g: any, state: any): number {
  const H = this.constants.hiddenSize;
  const b = this.thread.y;
  let j = this.thread.x;
  if (j >= H) {
    j = j - H;
  }
  const ig = 1 / (1 + Math.exp(-g[b][j]));
  const fg = 1 / (1 + Math.exp(-g[b][H + j]));
  const gg = 2 / (1 + Math.exp(-2 * g[b][2 * H + j])) - 1;
  const cNext = fg * state[b][H + j] + ig * gg;
  if (this.thread.x < H) {
    const og = 1 / (1 + Math.exp(-g[b][3 * H + j]));
    return og * (2 / (1 + Math.exp(-2 * cNext)) - 1);
  }
  return cNext;
}

/** gru: output [H, B] from the split gates of gatesSplit. */
export function updateGru(this: KernelThis, g: any, h: any): number {
  const H = this.constants.hiddenSize;
  const b = this.thread.y;
  const j = this.thread.x;
  const r = 1 / (1 + Math.exp(-(g[b][j] + g[b][3 * H + j])));
  const z = 1 / (1 + Math.exp(-(g[b][H + j] + g[b][4 * H + j])));
  const n = 2 / (1 + Math.exp(-2 * (g[b][2 * H + j] + r * g[b][5 * H + j]))) - 1;
  return (1 - z) * n + z * h[b][j];
}

/** head: output [K, B] logits (softmax, if any, is applied on readback). */
export function headLogits(this: KernelThis, x: any, w: any, bias: any): number {
  const k = this.thread.x;
  const b = this.thread.y;
  let s = bias[k];
  for (let j = 0; j < this.constants.hiddenSize; j++) {
    s += w[k][j] * x[b][j];
  }
  return s;
}

/** Row b of `rows` as a kernel output [columns, B]: uploads an array into a device texture once. */
export function copyRows(this: KernelThis, rows: any): number {
  return rows[this.thread.y][this.thread.x];
}

/** A vector as a kernel output [n]: a bias, uploaded once. */
export function copyVector(this: KernelThis, v: any): number {
  return v[this.thread.x];
}

/** Rows start..start+B-1 of `rows` as a kernel output [columns, B]: a wave's input rows, or a narrower bucket of a state. */
export function sliceRows(this: KernelThis, rows: any, start: number): number {
  return rows[start + this.thread.y][this.thread.x];
}

/** Zeros [columns, B]: where accumulateRows starts. */
export function zeros(this: KernelThis): number {
  return 0;
}

/**
 * `acc` with rows [start, start + n) replaced by `wave`'s rows 0..n-1: a micro-batch's outputs
 * and states gather here wave by wave on the device, and are read back once at its end.
 */
export function accumulateRows(this: KernelThis, acc: any, wave: any, start: number, n: number): number {
  const r = this.thread.y;
  if (r >= start && r < start + n) {
    return wave[r - start][this.thread.x];
  }
  return acc[r][this.thread.x];
}

/*
 * The slot table (gpujs-slot-table.ts): every key's state of one layer in one device texture,
 * [cols * blocks, tableRows]. Slot s sits at row s mod tableRows, in column block
 * floor(s / tableRows) (cols columns a block): tall enough for the texture limit of WebGL,
 * wide enough for a million keys. tableRows is a power of two, so the division is exact.
 */

/**
 * A micro-batch's keys' state before it, [cols, B]: for key u, source[u] >= 0 is its slot in
 * the table, -1 means zeros (a new key), and -2 - r means row r of `uploads` (a key whose newer
 * state is on the host).
 */
export function gatherSlots(this: SlotKernelThis, table: any, uploads: any, source: any): number {
  const f = source[this.thread.y];
  if (f >= 0) {
    const block = Math.floor(f / this.constants.tableRows);
    return table[f - block * this.constants.tableRows][block * this.constants.cols + this.thread.x];
  }
  if (f < -1.5) {
    return uploads[-2 - f][this.thread.x];
  }
  return 0;
}

/**
 * Which key of a micro-batch each slot of the table takes, [blocks, tableRows] (the slot
 * geometry): i where sortedSlots[i] = s, as keyOf[i], by a binary search over the micro-batch's
 * n slots in searchSteps halvings; -1 for a slot no key of it holds. Once per micro-batch, for
 * every layer's scatter: WebGL cannot write where it likes, so a scatter is a gather from every
 * slot's point of view, and this is the index it gathers by.
 */
export function slotKeys(this: SlotKernelThis, sortedSlots: any, keyOf: any, n: number): number {
  const s = this.thread.x * this.constants.tableRows + this.thread.y;
  let lo = 0;
  let hi = n;
  for (let i = 0; i < this.constants.searchSteps; i++) {
    if (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      if (sortedSlots[mid] < s) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
  }
  if (lo < n) {
    if (sortedSlots[lo] === s) {
      return keyOf[lo];
    }
  }
  return -1;
}

/** The table after a micro-batch, [cols * blocks, tableRows]: each slot's row of `latest` where `keys` (slotKeys) names one, else unchanged. */
export function scatterSlots(this: SlotKernelThis, table: any, latest: any, keys: any): number {
  const block = Math.floor(this.thread.x / this.constants.cols);
  const u = keys[this.thread.y][block];
  if (u >= 0) {
    return latest[u][this.thread.x - block * this.constants.cols];
  }
  return table[this.thread.y][this.thread.x];
}

/** The table in a larger geometry: every old slot where the new geometry puts it, zeros past oldSlots. */
export function growSlots(this: SlotKernelThis, table: any): number {
  const block = Math.floor(this.thread.x / this.constants.cols);
  const j = this.thread.x - block * this.constants.cols;
  const s = block * this.constants.tableRows + this.thread.y;
  if (s < this.constants.oldSlots) {
    const old = Math.floor(s / this.constants.oldRows);
    return table[s - old * this.constants.oldRows][old * this.constants.cols + j];
  }
  return 0;
}

interface SlotKernelThis {
  thread: { x: number; y: number };
  constants: { cols: number; tableRows: number; searchSteps: number; oldRows: number; oldSlots: number };
}

/**
 * `acc` with rows [start, start + n) replaced by rows rowList[0..n-1] of `src`: kept micro-batch
 * states, gathered into one block on the device so that a changelog's rows come back in one read.
 */
export function gatherRows(this: KernelThis, acc: any, src: any, rowList: any, start: number, n: number): number {
  const r = this.thread.y;
  if (r >= start && r < start + n) {
    return src[rowList[r - start]][this.thread.x];
  }
  return acc[r][this.thread.x];
}
