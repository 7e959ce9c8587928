// qaforge's question answering in JavaScript: features as run_qa.py builds them (question first,
// context second, `only_second` truncation into overlapping windows), character offsets of every
// context token, the model run in onnxruntime-web, and run_qa.py's post-processing.
//
// Token ids come from @huggingface/tokenizers, which reads the model's own tokenizer.json. That
// library returns no character offsets, so this file aligns its tokens with the context itself
// (WordPiece after BERT normalisation, and byte-level BPE); the node test checks ids, token types
// and offsets against the golden features the Python reference wrote.
//
// No DOM here: the page (app.js) and the tests (web/test/) import it alike.

/** run_qa.py's defaults, which qaforge's features and post-processing use. */
export const DEFAULT_OPTIONS = Object.freeze({ maxLength: 384, docStride: 128, nBest: 20, maxAnswerLength: 30, nullScoreDiffThreshold: 0 });

/** An error whose message is meant for the person using the page. */
export class QaError extends Error {}

const WHITESPACE = /^\p{White_Space}$/u;
const CONTROL = /^[\p{Cc}\p{Cf}\p{Co}\p{Cn}]$/u;
const MARK_NONSPACING = /^\p{Mn}$/u;
const PUNCTUATION = /^\p{P}$/u;

function isBertWhitespace(c) {
  return c === "\t" || c === "\n" || c === "\r" || WHITESPACE.test(c);
}

function isBertControl(c) {
  return !(c === "\t" || c === "\n" || c === "\r") && CONTROL.test(c);
}

function isBertPunctuation(c) {
  const cp = c.codePointAt(0);
  return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126) || PUNCTUATION.test(c);
}

function isChineseChar(cp) {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b920 && cp <= 0x2ceaf) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

/**
 * The BERT normalizer applied code point by code point, remembering for every normalized character
 * the index of the original code point it came from (offsets are code point indices, as Python's).
 */
function bertNormalize(chars, normalizer) {
  const lowercase = normalizer.lowercase !== false;
  const stripAccents = normalizer.strip_accents ?? lowercase;
  const cleanText = normalizer.clean_text !== false;
  const chinese = normalizer.handle_chinese_chars !== false;
  const out = [];
  const origin = [];
  chars.forEach((c, i) => {
    let pieces = c;
    if (cleanText) {
      if (c === "\0" || c === "\ufffd" || isBertControl(c)) return;
      if (isBertWhitespace(c)) pieces = " ";
    }
    if (chinese && isChineseChar(c.codePointAt(0))) pieces = ` ${c} `;
    if (stripAccents) pieces = Array.from(pieces.normalize("NFD")).filter((p) => !MARK_NONSPACING.test(p)).join("");
    if (lowercase) pieces = Array.from(pieces).map((p) => p.toLowerCase()).join("");
    for (const p of pieces) {
      out.push(p);
      origin.push(i);
    }
  });
  return { chars: out, origin };
}

/** GPT-2's byte ↔ printable character table of byte-level BPE. */
function byteLevelDecoder() {
  const printable = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table = new Map();
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (printable.includes(b)) table.set(String.fromCodePoint(b), b);
    else table.set(String.fromCodePoint(256 + extra++), b);
  }
  return table;
}

/** Where in the model's tokenizer.json the pieces this file needs are, checked once at load. */
function describeTokenizer(json) {
  const model = json.model?.type;
  const preTokenizers = json.pre_tokenizer?.type === "Sequence" ? json.pre_tokenizer.pretokenizers : [json.pre_tokenizer].filter(Boolean);
  const byteLevel = preTokenizers.find((p) => p.type === "ByteLevel");
  const normalizer = json.normalizer ?? null;
  if (model === "WordPiece") {
    if (normalizer && normalizer.type !== "BertNormalizer") throw new QaError(`tokenizer.json: WordPiece with a ${normalizer.type} normalizer is not supported (BertNormalizer is)`);
    return { kind: "wordpiece", normalizer: normalizer ?? { lowercase: false, strip_accents: false, clean_text: false, handle_chinese_chars: false }, prefix: json.model.continuing_subword_prefix ?? "##", unk: json.model.unk_token ?? "[UNK]" };
  }
  if (model === "BPE" && byteLevel) {
    if (normalizer) throw new QaError(`tokenizer.json: byte-level BPE with a ${normalizer.type} normalizer is not supported`);
    return { kind: "bytelevel", addPrefixSpace: Boolean(byteLevel.add_prefix_space), decoder: byteLevelDecoder() };
  }
  throw new QaError(`tokenizer.json: a ${model ?? "missing"} model${byteLevel ? "" : " without byte-level pre-tokenization"} is not supported (WordPiece and byte-level BPE are)`);
}

/** The special tokens of a (question, context) pair from the tokenizer's post-processor. */
function pairTemplate(json) {
  const processors = json.post_processor?.type === "Sequence" ? json.post_processor.processors : [json.post_processor].filter(Boolean);
  for (const p of processors) {
    if (p.type === "BertProcessing") {
      return [{ special: p.cls[1], type: 0 }, { sequence: "A", type: 0 }, { special: p.sep[1], type: 0 }, { sequence: "B", type: 1 }, { special: p.sep[1], type: 1 }];
    }
    if (p.type === "RobertaProcessing") {
      return [{ special: p.cls[1], type: 0 }, { sequence: "A", type: 0 }, { special: p.sep[1], type: 0 }, { special: p.sep[1], type: 0 }, { sequence: "B", type: 0 }, { special: p.sep[1], type: 0 }];
    }
    if (p.type === "TemplateProcessing") {
      return p.pair.flatMap((piece) => {
        if (piece.Sequence) return [{ sequence: piece.Sequence.id, type: piece.Sequence.type_id }];
        const token = p.special_tokens[piece.SpecialToken.id];
        if (!token) throw new QaError(`tokenizer.json: the template names ${piece.SpecialToken.id}, which it does not define`);
        return token.ids.map((id) => ({ special: id, type: piece.SpecialToken.type_id }));
      });
    }
  }
  throw new QaError("tokenizer.json: no post-processor that says how a question and a context are joined (BertProcessing, RobertaProcessing or TemplateProcessing)");
}

/** A question-answering tokenizer: @huggingface/tokenizers for ids, this file for offsets and windows. */
export class QaTokenizer {
  /**
   * @param {object} tokenizerJson the model's tokenizer.json
   * @param {object} tokenizerConfig its tokenizer_config.json ({} when it has none)
   * @param {Function} TokenizerClass @huggingface/tokenizers' Tokenizer
   */
  constructor(tokenizerJson, tokenizerConfig, TokenizerClass) {
    this.inner = new TokenizerClass(tokenizerJson, tokenizerConfig);
    this.shape = describeTokenizer(tokenizerJson);
    this.template = pairTemplate(tokenizerJson);
    const padToken = tokenizerConfig.pad_token?.content ?? tokenizerConfig.pad_token;
    const candidates = typeof padToken === "string" ? [padToken] : ["[PAD]", "<pad>"];
    this.padId = candidates.map((t) => this.inner.token_to_id(t)).find((id) => id !== undefined);
    if (this.padId === undefined) throw new QaError(`tokenizer.json: no padding token (looked for ${candidates.join(", ")})`);
  }

  /** Ids of `text` without special tokens, and each token's [begin, end) code point offsets. */
  encodeWithOffsets(text) {
    const { ids, tokens } = this.inner.encode(text, { add_special_tokens: false });
    const chars = Array.from(text);
    const offsets = this.shape.kind === "wordpiece" ? this.alignWordPiece(chars, tokens) : this.alignByteLevel(chars, tokens);
    return { ids, tokens, offsets };
  }

  alignWordPiece(chars, tokens) {
    const { chars: norm, origin } = bertNormalize(chars, this.shape.normalizer);
    const { prefix, unk } = this.shape;
    let at = 0;
    const matches = (piece, from) => {
      const p = Array.from(piece);
      return p.every((c, k) => norm[from + k] === c) ? p.length : -1;
    };
    return tokens.map((token) => {
      let length = -1;
      if (token.startsWith(prefix) && token.length > prefix.length) length = matches(token.slice(prefix.length), at);
      if (length < 0) {
        while (at < norm.length && norm[at] === " ") at++;
        if (token === unk) {
          // An unknown word: WordPiece gives one [UNK] for the whole pre-tokenized word.
          length = 1;
          if (!isBertPunctuation(norm[at])) while (at + length < norm.length && norm[at + length] !== " " && !isBertPunctuation(norm[at + length])) length++;
        } else {
          length = matches(token, at);
        }
      }
      if (length < 0 || at + length > norm.length) throw new QaError(`cannot place the token “${token}” in the text (character ${origin[at] ?? chars.length})`);
      const span = [origin[at], origin[at + length - 1] + 1];
      at += length;
      return span;
    });
  }

  alignByteLevel(chars, tokens) {
    // The text's UTF-8 bytes, each with the code point it belongs to.
    const encoder = new TextEncoder();
    const byteOrigin = [];
    const bytes = [];
    chars.forEach((c, i) => {
      for (const b of encoder.encode(c)) {
        bytes.push(b);
        byteOrigin.push(i);
      }
    });
    const decoder = this.shape.decoder;
    let at = 0;
    return tokens.map((token, index) => {
      let tokenBytes = Array.from(token).map((c) => decoder.get(c));
      if (index === 0 && this.shape.addPrefixSpace && tokenBytes[0] === 0x20 && bytes[0] !== 0x20) tokenBytes = tokenBytes.slice(1);
      if (tokenBytes.some((b, k) => b !== bytes[at + k])) throw new QaError(`cannot place the token “${token}” in the text (byte ${at})`);
      // trim_offsets: the spaces a byte-level token carries are not part of its offsets.
      // A token of spaces only ends up empty, at its end (as tokenizers' trim_offsets leaves it).
      let first = at;
      const last = at + tokenBytes.length;
      while (first < last && bytes[first] === 0x20) first++;
      at += tokenBytes.length;
      const end = byteOrigin[last - 1] + 1;
      return [first === last ? end : byteOrigin[first], end];
    });
  }

  /**
   * The features of one question about one context: windows of at most `maxLength` tokens, each
   * `{ ids, typeIds, offsets }` with offsets `null` outside the context.
   */
  features(question, context, options = DEFAULT_OPTIONS) {
    const { maxLength, docStride } = options;
    // run_qa.py strips the question's leading whitespace.
    const q = this.encodeWithOffsets(question.replace(/^\s+/u, ""));
    const c = this.encodeWithOffsets(context);
    const specials = this.template.filter((t) => t.special !== undefined).length;
    const budget = maxLength - q.ids.length - specials;
    if (budget <= docStride) {
      throw new QaError(`the question is too long: ${q.ids.length} tokens leave ${Math.max(budget, 0)} of ${maxLength} for the context, and windows overlap by ${docStride}`);
    }
    // tokenizers' Encoding::truncate (only_second, direction right): windows of `budget` context
    // tokens, each starting `budget - docStride` after the previous, the last one ending at the end.
    const ranges = [];
    if (c.ids.length <= budget) ranges.push([0, c.ids.length]);
    else {
      for (let start = 0; ; start += budget - docStride) {
        const stop = Math.min(start + budget, c.ids.length);
        ranges.push([start, stop]);
        if (stop === c.ids.length) break;
      }
    }
    return ranges.map(([start, stop]) => {
      const ids = [];
      const typeIds = [];
      const offsets = [];
      for (const piece of this.template) {
        if (piece.special !== undefined) {
          ids.push(piece.special);
          typeIds.push(piece.type);
          offsets.push(null);
        } else if (piece.sequence === "A") {
          for (const id of q.ids) {
            ids.push(id);
            typeIds.push(piece.type);
            offsets.push(null);
          }
        } else {
          for (let k = start; k < stop; k++) {
            ids.push(c.ids[k]);
            typeIds.push(piece.type);
            offsets.push(c.offsets[k]);
          }
        }
      }
      return { ids, typeIds, offsets };
    });
  }
}

/** Indices of the `n` largest values, largest first, the lower index first on ties (as qaforge). */
function topIndices(values, n) {
  const order = Array.from(values.keys());
  order.sort((a, b) => values[b] - values[a] || a - b);
  return order.slice(0, n);
}

/**
 * run_qa.py's post-processing of one question (as qaforge restates it in
 * crates/qaforge-squad/src/postprocess.rs): each window's start and end logits → the best answer
 * span, or none when the null score beats it. Scores are float32 sums, as numpy's.
 * @returns {{text: string, begin: number, end: number, score: number, nullScore: number, nullOdds: number}}
 *   `begin`/`end` are code point offsets into the context (-1 when there is no answer).
 */
export function predict(context, windows, logits, options = DEFAULT_OPTIONS) {
  const f32 = Math.fround;
  let minNull = null;
  const prelim = [];
  windows.forEach((w, i) => {
    const { start, end } = logits[i];
    const nullScore = f32(start[0] + end[0]);
    if (minNull === null || minNull.score > nullScore) minNull = { offsets: [0, 0], score: nullScore, startLogit: start[0], endLogit: end[0] };
    for (const s of topIndices(start, options.nBest)) {
      for (const e of topIndices(end, options.nBest)) {
        const so = w.offsets[s];
        const eo = w.offsets[e];
        if (!so || !eo || e < s || e - s + 1 > options.maxAnswerLength) continue;
        prelim.push({ offsets: [so[0], eo[1]], score: f32(start[s] + end[e]), startLogit: start[s], endLogit: end[e] });
      }
    }
  });
  if (minNull === null) return { text: "", begin: -1, end: -1, score: 0, nullScore: 0, nullOdds: 0 };
  prelim.push(minNull);
  // Array.prototype.sort is stable, as Python's sorted(reverse=True) on equal scores.
  prelim.sort((a, b) => b.score - a.score);
  const kept = prelim.slice(0, options.nBest);
  if (!kept.some((p) => p.offsets[0] === 0 && p.offsets[1] === 0)) kept.push(minNull);
  const chars = Array.from(context);
  const texts = kept.map((p) => chars.slice(p.offsets[0], p.offsets[1]).join(""));
  const best = texts.findIndex((t) => t !== "");
  const bestStart = best >= 0 ? kept[best].startLogit : 0;
  const bestEnd = best >= 0 ? kept[best].endLogit : 0;
  const nullOdds = f32(f32(minNull.score - bestStart) - bestEnd);
  const score = best >= 0 ? kept[best].score : 0;
  if (nullOdds > options.nullScoreDiffThreshold || best < 0) return { text: "", begin: -1, end: -1, score, nullScore: minNull.score, nullOdds };
  return { text: texts[best], begin: kept[best].offsets[0], end: kept[best].offsets[1], score, nullScore: minNull.score, nullOdds };
}

/**
 * Runs the model on windows one at a time (batch 1, as an app runs it), each padded with one
 * padding token past its end, as qaforge runs features (MobileBERT's trigram embedding lets the
 * last real token see the next one), but never past `maxLength`, where qaforge's features end.
 * Returns each window's start and end logits over its real tokens.
 * @param {object} ort onnxruntime-web's module
 * @param {object} session an ort.InferenceSession
 * @param {{io: object, padId: number, maxLength: number}} model `io`: the graph's inputs by role
 *   ("ids", "mask", "types") and its start and end outputs, as qaforge-site.json gives them
 *   ({inputs: [{name, role, int32}], start, end}); the padding token's id; the feature length
 * @param {Array} windows from QaTokenizer.features (or a bundle's features)
 * @param {function} [between] awaited between windows (the page yields to the browser there)
 */
export async function runWindows(ort, session, model, windows, between = async () => {}) {
  const { io, padId, maxLength } = model;
  const results = [];
  for (const w of windows) {
    const n = w.ids.length;
    const length = Math.min(n + 1, maxLength);
    const values = { ids: new Array(length).fill(padId), mask: new Array(length).fill(0), types: new Array(length).fill(0) };
    for (let k = 0; k < n; k++) {
      values.ids[k] = w.ids[k];
      values.mask[k] = 1;
      values.types[k] = w.typeIds[k];
    }
    const feeds = {};
    for (const input of io.inputs) {
      const v = values[input.role];
      feeds[input.name] = input.int32 ? new ort.Tensor("int32", Int32Array.from(v), [1, length]) : new ort.Tensor("int64", BigInt64Array.from(v, BigInt), [1, length]);
    }
    const out = await session.run(feeds);
    const start = Float32Array.from(out[io.start].data.slice(0, n), Number);
    const end = Float32Array.from(out[io.end].data.slice(0, n), Number);
    if (start.some((v) => !Number.isFinite(v)) || end.some((v) => !Number.isFinite(v))) throw new QaError("the model produced non-finite logits (NaN or Inf)");
    results.push({ start, end });
    await between();
  }
  return results;
}
