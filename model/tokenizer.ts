// DS4 tokenizer: GPT-2 byte-level BPE behind ds4's hand-written JoyAI pre-tokenizer (catalog §7,
// ds4.c bpe_tokenize_text / bpe_emit_piece). The split runs on UTF-8 bytes, exactly like ds4, so that
// invalid UTF-8 and odd code points split the same way; pieces are then mapped to GPT-2's printable
// code points and merged by lowest rank.
import type { GgufModel } from './gguf.ts';
import { badInput } from './errors.ts';

// ---------------------------------------------------------------------------------------------------
// GPT-2 byte <-> printable code point table

/** Bytes that GPT-2 keeps as their own code point: '!'..'~', '¡'..'¬', '®'..'ÿ'. */
function gpt2Printable(b: number): boolean {
  return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
}

/** BYTE_TO_CHAR[b]: the one-character string GPT-2 uses for byte b (the others go to 256, 257, ... in byte order). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(gpt2Printable(b) ? b : 256 + n++));
  return out;
})();

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_TO_CHAR.map((c, b) => [c, b]));

/** Raw bytes → GPT-2 byte-level string (what appears in tokenizer.ggml.tokens and .merges). */
export function byteEncode(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}

// ---------------------------------------------------------------------------------------------------
// JoyAI pre-tokenizer (ds4.c bpe_tokenize_text, l.14709). DS4's GGUF declares tokenizer.ggml.pre =
// "joyai-llm"; ds4 approximates its regex with byte rules, and the split shape changes the merges, so
// these rules follow ds4 rather than the regex (see test/tokenizer.test.ts for where the two differ).

const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isAsciiAlpha = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isNewline = (c: number) => c === 0x0a || c === 0x0d;
/** ' ', \t, \n, \v, \f, \r — the C locale's isspace. */
const isSpace = (c: number) => c === 0x20 || (c >= 0x09 && c <= 0x0d);
/** The 32 ASCII punctuation/symbol characters: ! .. / : .. @ [ .. ` { .. ~ */
const isPunct = (c: number) => (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) || (c >= 0x7b && c <= 0x7e);
/** ds4 treats every non-ASCII byte as a letter (accents, Cyrillic, emoji, even stray continuation bytes). */
const isLetterLike = (c: number) => c >= 0x80 || isAsciiAlpha(c);

/** Length of the UTF-8 sequence a lead byte announces; 1 for ASCII, continuation and invalid bytes. */
function utf8Len(c: number): number {
  if (c < 0x80) return 1;
  if ((c & 0xe0) === 0xc0) return 2;
  if ((c & 0xf0) === 0xe0) return 3;
  if ((c & 0xf8) === 0xf0) return 4;
  return 1;
}

/** Position after the UTF-8 character at pos (one byte if the sequence would run past the end). */
function nextChar(s: Uint8Array, pos: number): number {
  const n = utf8Len(s[pos]);
  return pos + n > s.length ? pos + 1 : pos + n;
}

/** Code point at pos, decoded without validating continuation bytes (as ds4 does). */
function peekCodePoint(s: Uint8Array, pos: number): number {
  const c0 = s[pos];
  let n = utf8Len(c0);
  if (pos + n > s.length) n = 1;
  if (n === 1) return c0;
  const cont = (k: number) => s[pos + k] & 0x3f;
  if (n === 2) return ((c0 & 0x1f) << 6) | cont(1);
  if (n === 3) return ((c0 & 0x0f) << 12) | (cont(1) << 6) | cont(2);
  return ((c0 & 0x07) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
}

/** CJK unified ideographs U+4E00..U+9FA5, Hiragana U+3040..U+309F, Katakana U+30A0..U+30FF. */
function isCjkAt(s: Uint8Array, pos: number): boolean {
  if (s[pos] < 0x80) return false;
  const cp = peekCodePoint(s, pos);
  return (cp >= 0x4e00 && cp <= 0x9fa5) || (cp >= 0x3040 && cp <= 0x309f) || (cp >= 0x30a0 && cp <= 0x30ff);
}

function skipLetters(s: Uint8Array, pos: number): number {
  while (pos < s.length && isLetterLike(s[pos])) pos = nextChar(s, pos);
  return pos;
}

/** End of the piece that starts at `start`: the JoyAI rules in ds4's priority order. */
function pieceEnd(s: Uint8Array, start: number): number {
  const len = s.length;
  const c = s[start];
  let pos = start;
  if (isDigit(c)) {
    // \p{N}{1,3}: digit runs are cut every three ("12345" → "123", "45")
    while (pos < len && pos - start < 3 && isDigit(s[pos])) pos++;
  } else if (isCjkAt(s, pos)) {
    do pos = nextChar(s, pos);
    while (pos < len && isCjkAt(s, pos));
  } else if (isPunct(c) && pos + 1 < len && isAsciiAlpha(s[pos + 1])) {
    // one punctuation char glued to an ASCII word: ".foo", "_bar", "#include"
    pos++;
    while (pos < len && isAsciiAlpha(s[pos])) pos++;
  } else if (isLetterLike(c)) {
    pos = skipLetters(s, pos);
  } else if (!isNewline(c) && !isPunct(c) && pos + 1 < len && isLetterLike(s[pos + 1])) {
    // one leading non-letter (usually the space) joins the word: " are"
    pos = skipLetters(s, pos + 1);
  } else if (c === 0x20 && pos + 1 < len && isPunct(s[pos + 1])) {
    // " " + punctuation run + trailing newlines: " {\n"
    pos++;
    while (pos < len && isPunct(s[pos])) pos++;
    while (pos < len && isNewline(s[pos])) pos++;
  } else if (isPunct(c)) {
    // punctuation keeps its trailing newlines (">;\n" is one word; ds4 notes splitting it changes logits)
    while (pos < len && isPunct(s[pos])) pos++;
    while (pos < len && isNewline(s[pos])) pos++;
  } else if (isSpace(c)) {
    let p = pos;
    let lastNewlineEnd = -1;
    while (p < len && isSpace(s[p])) if (isNewline(s[p++])) lastNewlineEnd = p;
    if (lastNewlineEnd >= 0) pos = lastNewlineEnd; // whitespace up to and including the last newline
    else if (p < len && p > pos + 1 && (isLetterLike(s[p]) || isPunct(s[p]))) pos = p - 1; // leave one space for the next word: "    int" → "   ", " int"
    else pos = p;
  } else {
    pos = nextChar(s, pos);
  }
  return pos === start ? nextChar(s, pos) : pos;
}

/** JoyAI pre-tokenization of UTF-8 bytes into [start, end) byte ranges. */
export function joyaiSplitBytes(bytes: Uint8Array): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let pos = 0; pos < bytes.length; ) {
    const end = pieceEnd(bytes, pos);
    out.push([pos, end]);
    pos = end;
  }
  return out;
}

/** JoyAI pre-tokenization of a string into its pieces (each piece is whole UTF-8 characters for valid text). */
export function joyaiSplit(text: string): string[] {
  const bytes = Buffer.from(text, 'utf8');
  return joyaiSplitBytes(bytes).map(([a, b]) => bytes.subarray(a, b).toString('utf8'));
}

// ---------------------------------------------------------------------------------------------------
// Byte-level BPE

export interface VocabTables {
  tokens: string[];
  merges: string[];
  tokenTypes?: number[];
}

/**
 * A list of strings looked up both ways — a vocabulary's tokens or merges, ids being positions: an array
 * (tableOf), or the GGUF's array in place (model/gguf.ts GgufStrings: nothing decoded but what is looked at).
 */
export interface StringTable {
  length: number;
  at(i: number): string | undefined;
  /** the position of the LAST element equal to s (a later duplicate wins, like ds4's table put), or -1 */
  indexOf(s: string): number;
}

function tableOf(strings: string[]): StringTable {
  const index = new Map<string, number>();
  strings.forEach((t, i) => index.set(t, i));
  return { length: strings.length, at: (i) => strings[i], indexOf: (s) => index.get(s) ?? -1 };
}

// The seven special tokens ds4 resolves by text at load and recognises in pre-rendered chat text, in
// ds4's matching order (ds4.c vocab_load, special_token_at).
export const SPECIALS = {
  bos: '<｜begin▁of▁sentence｜>',
  eos: '<｜end▁of▁sentence｜>',
  user: '<｜User｜>',
  assistant: '<｜Assistant｜>',
  thinkStart: '<think>',
  thinkEnd: '</think>',
  dsml: '｜DSML｜',
} as const;
const SPECIAL_LIST = Object.values(SPECIALS);

/** ds4 prints tokens containing U+FF5C (the fullwidth bar of <｜…｜>) verbatim instead of byte-decoding them (ds4.c ds4_token_text). */
const FULLWIDTH_BAR = '\uff5c';

/** The raw bytes of a token as the vocabulary stores it (see Tokenizer.tokenBytes). */
function vocabBytes(t: string | undefined): Uint8Array {
  if (t === undefined) return new Uint8Array(0);
  if (t.includes(FULLWIDTH_BAR)) return Buffer.from(t, 'utf8');
  const bytes: number[] = [];
  for (const ch of t) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) bytes.push(b);
  }
  return Uint8Array.from(bytes);
}

export class Tokenizer {
  readonly size: number;
  readonly bos: number;
  readonly eos: number;
  private readonly tokens: StringTable;
  private readonly merges: StringTable;
  private readonly specialIds = new Map<string, number>();
  /** BPE result per byte-level piece: prompts repeat words, and a real-vocab merge loop is the slow part. */
  private readonly pieceCache = new Map<string, number[]>();

  private constructor(v: { tokens: StringTable; merges: StringTable }, source: string) {
    this.tokens = v.tokens;
    this.merges = v.merges;
    this.size = v.tokens.length;
    // Later duplicates win, like ds4's hash table put (ds4.c table_put overwrites).
    for (const text of SPECIAL_LIST) {
      const id = this.tokens.indexOf(text);
      // ds4 exits when any of these is missing ("required tokenizer token is missing").
      if (id < 0) throw badInput(`${source}: required tokenizer token ${text} is missing from tokenizer.ggml.tokens`);
      this.specialIds.set(text, id);
    }
    this.bos = this.specialIds.get(SPECIALS.bos)!;
    this.eos = this.specialIds.get(SPECIALS.eos)!;
  }

  /**
   * From tokenizer.ggml.tokens and tokenizer.ggml.merges, read in place (a 129k vocabulary is not decoded:
   * a prompt looks up a few hundred entries). ds4 ignores bos/eos_token_id and token_type: ids come from the texts.
   */
  static fromGguf(m: GgufModel): Tokenizer {
    const strings = (key: string): StringTable => {
      const v = m.stringArray(key);
      if (!v) throw badInput(`${m.path}: ${key} is missing or not an array of strings`);
      return v;
    };
    return new Tokenizer({ tokens: strings('tokenizer.ggml.tokens'), merges: strings('tokenizer.ggml.merges') }, m.path);
  }

  static fromVocab(v: VocabTables): Tokenizer {
    return new Tokenizer({ tokens: tableOf(v.tokens), merges: tableOf(v.merges) }, 'vocabulary');
  }

  /** Id of one of ds4's seven special tokens by its text (BOS, EOS, User, Assistant, <think>, </think>, ｜DSML｜). */
  special(text: string): number | undefined {
    return this.specialIds.get(text);
  }

  /** Plain text → ids: JoyAI pieces, each BPE-merged on its own. Special-token texts are not recognised (ds4 bpe_tokenize_text). */
  encode(text: string): number[] {
    const bytes = Buffer.from(text, 'utf8');
    const out: number[] = [];
    for (const [a, b] of joyaiSplitBytes(bytes)) {
      const piece = byteEncode(bytes.subarray(a, b));
      let ids = this.pieceCache.get(piece);
      if (!ids) this.pieceCache.set(piece, (ids = this.bpePiece(piece)));
      out.push(...ids);
    }
    return out;
  }

  /** Pre-rendered chat text → ids: the seven special texts become their ids, the spans between are BPE'd separately (ds4 tokenize_rendered_chat). */
  encodeWithSpecials(text: string): number[] {
    const out: number[] = [];
    let span = 0;
    for (let p = 0; p < text.length; ) {
      const s = SPECIAL_LIST.find((t) => text.startsWith(t, p));
      if (s === undefined) {
        p++;
        continue;
      }
      out.push(...this.encode(text.slice(span, p)), this.specialIds.get(s)!);
      p += s.length;
      span = p;
    }
    out.push(...this.encode(text.slice(span)));
    return out;
  }

  /**
   * Merge one byte-level piece: repeatedly join the adjacent pair with the lowest merge rank (the
   * leftmost on ties), then look the symbols up. A symbol missing from the vocabulary falls back to
   * its single ASCII characters, as ds4's bpe_emit_piece does (only ASCII can match one byte there).
   */
  private bpePiece(piece: string): number[] {
    const sym = [...piece];
    const rankAt = (i: number) => {
      const r = this.merges.indexOf(`${sym[i]} ${sym[i + 1]}`);
      return r < 0 ? Infinity : r;
    };
    const ranks = sym.slice(0, -1).map((_, i) => rankAt(i));
    for (;;) {
      let best = -1;
      for (let i = 0; i < ranks.length; i++) if (ranks[i] < (best < 0 ? Infinity : ranks[best])) best = i;
      if (best < 0) break;
      sym.splice(best, 2, sym[best] + sym[best + 1]);
      ranks.splice(best, 1);
      if (best > 0) ranks[best - 1] = rankAt(best - 1);
      if (best < ranks.length) ranks[best] = rankAt(best);
    }
    const ids: number[] = [];
    for (const s of sym) {
      const id = this.tokens.indexOf(s);
      if (id >= 0) ids.push(id);
      else for (const ch of s) {
        const one = ch.charCodeAt(0) < 0x80 ? this.tokens.indexOf(ch) : -1;
        if (one >= 0) ids.push(one);
      }
    }
    return ids;
  }

  /** Raw bytes of one token: special-looking tokens verbatim, the rest mapped back through the GPT-2 byte table (unknown code points dropped). */
  tokenBytes(id: number): Uint8Array {
    return vocabBytes(this.tokens.at(id));
  }

  /** Ids → text. Bytes are joined before UTF-8 decoding, so a character split across tokens decodes whole. */
  decode(ids: number[]): string {
    return Buffer.concat(ids.map((id) => this.tokenBytes(id))).toString('utf8');
  }

  /** The text of one token alone (a partial UTF-8 character shows as U+FFFD). */
  piece(id: number): string {
    return Buffer.from(this.tokenBytes(id)).toString('utf8');
  }

  /** The text of token `id` read straight from the model's vocabulary, nothing else of it decoded ('' without one). */
  static pieceIn(m: GgufModel, id: number): string {
    const tokens = m.stringArray('tokenizer.ggml.tokens');
    return tokens ? Buffer.from(vocabBytes(tokens.at(id))).toString('utf8') : '';
  }

  /** The token as stored in the vocabulary (byte-level form, e.g. "Ġare"), as ds4 --dump-tokens prints it. */
  vocabText(id: number): string | undefined {
    return this.tokens.at(id);
  }
}
