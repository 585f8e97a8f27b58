/**
 * Words as model input, fastText style: a word is normalised, then represented by its row in a
 * vocabulary (when it has one) and by the rows of its character n-grams, hashed into a fixed
 * number of buckets, so that an unseen or misspelt word ("remindr") still shares rows with the
 * words it resembles ("reminder"). Bojanowski et al., "Enriching Word Vectors with Subword
 * Information", TACL 2017: n-grams of the word wrapped in `<` and `>`, n from 3 to 5, FNV-1a.
 *
 * Part of the pure numeric core: no imports beyond the language and the model's types.
 */
import type { WordInput } from './model.js';

/** Apostrophes as typed by phones and word processors, all read as `'`. */
const APOSTROPHES = /[\u2018\u2019\u02bc\u0060\u00b4]/g;
/** What is stripped from both ends of a token: anything but a letter, a digit or an apostrophe. */
const EDGE_PUNCTUATION = /^[^\p{L}\p{N}']+|[^\p{L}\p{N}']+$/gu;

/**
 * The form a word is looked up in: NFKC (full-width letters, ligatures), lower case, one kind of
 * apostrophe, punctuation stripped from its ends ("today?" -> "today", "'hotel'" -> "hotel'"
 * -> "hotel"), inner punctuation kept ("what's", "u.s"). A token of punctuation only ("?", "-")
 * stays as it is, lower-cased: it is still a word of the utterance.
 */
export function normaliseWord(word: string): string {
  const lower = word.normalize('NFKC').toLowerCase().replace(APOSTROPHES, "'");
  const stripped = lower.replace(EDGE_PUNCTUATION, '').replace(/^'+|'+$/g, '');
  return stripped.length > 0 ? stripped : lower;
}

/** The character n-grams of a normalised word, wrapped in `<` `>`, for n in [minN, maxN]. */
export function characterNgrams(word: string, minN: number, maxN: number): string[] {
  const chars = Array.from(`<${word}>`); // code points, so an emoji is one character
  const grams: string[] = [];
  for (let n = minN; n <= maxN; n++) {
    for (let i = 0; i + n <= chars.length; i++) {
      const gram = chars.slice(i, i + n).join('');
      if (gram !== '<' && gram !== '>') grams.push(gram);
    }
  }
  return grams;
}

/**
 * 32-bit FNV-1a over the UTF-8 bytes of `text` (fastText's subword hash), encoded as it goes:
 * it runs per n-gram of every word and per event of a shadow run, where a TextEncoder buffer per
 * call was an allocation each. The bytes are TextEncoder's (a lone surrogate is U+FFFD).
 */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      hash = mix(hash, c);
      continue;
    }
    if (c < 0x800) {
      hash = mix(mix(hash, 0xc0 | (c >> 6)), 0x80 | (c & 0x3f));
      continue;
    }
    const next = i + 1 < text.length ? text.charCodeAt(i + 1) : 0;
    if (c >= 0xd800 && c < 0xdc00 && next >= 0xdc00 && next < 0xe000) {
      const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
      hash = mix(mix(mix(mix(hash, 0xf0 | (cp >> 18)), 0x80 | ((cp >> 12) & 0x3f)), 0x80 | ((cp >> 6) & 0x3f)), 0x80 | (cp & 0x3f));
      i++;
      continue;
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd;
    hash = mix(mix(mix(hash, 0xe0 | (c >> 12)), 0x80 | ((c >> 6) & 0x3f)), 0x80 | (c & 0x3f));
  }
  return hash >>> 0;
}

const mix = (hash: number, byte: number): number => Math.imul(hash ^ byte, 0x01000193);

/** What one word looks up: its vocabulary row (or -1) and its n-grams' bucket rows. */
export interface WordRows {
  readonly vocabularyRow: number;
  readonly bucketRows: readonly number[];
}

/**
 * The rows of the embedding table a word sums: the vocabulary's rows come first (row i is
 * vocabulary[i]), then `buckets` rows of hashed n-grams.
 */
export function wordRows(
  normalised: string,
  table: { readonly index: ReadonlyMap<string, number>; readonly buckets: number; readonly minN: number; readonly maxN: number },
): WordRows {
  const vocabularyRow = table.index.get(normalised) ?? -1;
  const vocabularySize = table.index.size;
  const bucketRows = table.buckets > 0 ? characterNgrams(normalised, table.minN, table.maxN).map((g) => vocabularySize + (fnv1a(g) % table.buckets)) : [];
  return { vocabularyRow, bucketRows };
}

/**
 * The word's input vector into `out` (its first `input.dim` floats): the mean of its rows, its
 * vocabulary row and its n-grams' bucket rows; a word with none (possible only without buckets)
 * takes the table's last row.
 */
export function embedWord(input: WordInput, word: string, out: Float64Array | Float32Array): void {
  const rows = rowsOfWord(input, word);
  const { dim, table } = input;
  for (let i = 0; i < dim; i++) out[i] = 0;
  for (const row of rows) for (let i = 0; i < dim; i++) out[i]! += table[row * dim + i]!;
  const inv = 1 / rows.length;
  for (let i = 0; i < dim; i++) out[i]! *= inv;
}

/** The rows a word averages, in the order embedWord sums them (training sees exactly these). */
export function rowsOfWord(input: Pick<WordInput, 'index' | 'buckets' | 'minN' | 'maxN'>, word: string): number[] {
  const { vocabularyRow, bucketRows } = wordRows(normaliseWord(word), input);
  return vocabularyRow >= 0 ? [vocabularyRow, ...bucketRows] : bucketRows.length > 0 ? [...bucketRows] : [input.index.size + input.buckets];
}

/**
 * embedWord with the vectors of recent words kept: a stream repeats its words (CLINC150's 25,674
 * validation words are 3,000-odd distinct ones), and a word's n-grams and hashes cost more than
 * its vector's copy. Bounded: past `capacity` distinct words the cache starts again, so a stream of
 * unique tokens holds at most `capacity` vectors. Results are those of embedWord, bit for bit.
 */
export class WordVectors {
  private readonly vectors = new Map<string, Float64Array>();

  constructor(
    private readonly input: WordInput,
    private readonly capacity = 8192,
  ) {}

  into(word: string, out: Float64Array | Float32Array): void {
    let v = this.vectors.get(word);
    if (!v) {
      v = new Float64Array(this.input.dim);
      embedWord(this.input, word, v);
      if (this.vectors.size >= this.capacity) this.vectors.clear();
      this.vectors.set(word, v);
    }
    for (let i = 0; i < v.length; i++) out[i] = v[i]!;
  }
}
