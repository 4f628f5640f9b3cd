#!/usr/bin/env node
// Small synthetic tokenizer.json files, one per feature of the pipeline, and their expected outputs from
// Hugging Face's Rust `tokenizers` (the npm package `tokenizers`, the Node binding of the Rust crate: the
// same library, and the same version, as tests/tok/expect_*.json were made with).
//
//   npm install --no-save --ignore-scripts --prefix /tmp/tokref tokenizers@0.23.2
//   node tests/ref/tok_synthetic.mjs [--lib /tmp/tokref/node_modules/tokenizers] [--out tests/tok/synthetic]
//
// Writes OUT/<name>.json (the tokenizers) and OUT/expect.json.  The vocabularies are made here: an alphabet
// (the 256 ByteLevel characters, or the characters of a training text, with <0xNN> byte tokens where the
// tokenizer falls back to bytes) and a few hundred merges learned from the training text by plain BPE
// counting over the words that the tokenizer's own normalizer and pre-tokenizer make of it (the reference
// library runs those).  Everything is deterministic: running it twice gives the same files.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const args = process.argv.slice(2);
const opt = (k, d) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : d;
};
const here = path.dirname(new URL(import.meta.url).pathname);
const lib = opt("--lib", "/tmp/tokref/node_modules/tokenizers");
const outDir = opt("--out", path.join(here, "..", "tok", "synthetic"));
const require = createRequire(import.meta.url);
const { Tokenizer } = require(lib);
const libVersion = JSON.parse(fs.readFileSync(path.join(lib, "package.json"), "utf8")).version;

// ---- training text and test texts ------------------------------------------------------------------

const TRAIN = [
  "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs away quickly!",
  "Hello world, hello again. It's a small world: we're here, they'll come, I'd say you've seen it.",
  "Numbers like 12345, 3.14159 and 2024-01-31 appear in text; so do prices: $19.99 or 1,000,000.",
  "def main():\n    print(\"hello\")\n    return 0\n\nfor i in range(10):\n\tx += i * 2",
  "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe \u00e5ngstr\u00f6m \u0153uvre, \u03b1\u03b2\u03b3 \u03b4\u03b5\u03b6, \u043f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440.",
  "snake_case_name camelCaseName kebab-case-name CONSTANT_VALUE e-mail foo@example.com https://x.org/a?b=c",
  "   spaces   and\ttabs\t\tand\nnew\n\nlines  ",
].join("\n");

const TEXTS = [
  "",
  " ",
  "a",
  "Hello world",
  "hello world",
  " Hello  world ",
  "Hello, world! How's it going?",
  "I'm sure they'll say we've done it, don't you think? I'D SAY SO",
  "The quick brown fox jumps over the lazy dog.",
  "quickly quicker quick",
  "12345 + 678 = 99,999.5 and 2024-01-31",
  "x=3.14;y=-2",
  "tab\there\t\tdouble",
  "line1\nline2\r\nline3\n\n\nend",
  "   leading",
  "trailing   ",
  "a  b   c    d",
  "snake_case_name camelCaseName",
  'fn main() { println!("hi"); }',
  "Caf\u00e9 caf\u0065\u0301 na\u00efve r\u00e9sum\u00e9",
  "\u039f\u0394\u039f\u03a3 \u03a3\u03af\u03c3\u03c5\u03c6\u03bf\u03c2 \u0399\u03a3",
  "\u0130stanbul I\u0307 \u1e9e STRASSE",
  "\ufb01ne \ufb02ow \u2460\u2461 \uff21\uff22\uff23\uff11\uff12\uff13 \u00bd \u2126",
  "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8 \ud55c\uad6d\uc5b4",
  "\ud83d\ude00 emoji \ud83d\udc4d\ud83c\udffd and \ud83c\uddeb\ud83c\uddf7",
  "\u2581literal\u2581metaspace \u2581\u2581 x",
  "e-mail: foo@bar.com, url https://example.org/a?b=c#d",
  "don't-stop...!!!???",
  "word wordy words sword",
  "\u00a0nbsp\u2003em\u3000ideographic",
  "\u0661\u0662\u0663 \u0968\u0969 \u00b2\u00b3",
  "MiXeD CaSe WoRdS",
];

// ---- the tokenizers --------------------------------------------------------------------------------

const bl = (o = {}) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true, ...o });
const split = (pattern, behavior, invert = false) => ({ type: "Split", pattern, behavior, invert });
const tpl = (single, specials) => ({
  type: "TemplateProcessing",
  single,
  pair: [...single, { Sequence: { id: "B", type_id: 1 } }],
  special_tokens: specials,
});
const tplTok = (id) => ({ SpecialToken: { id, type_id: 0 } });
const SEQ_A = { Sequence: { id: "A", type_id: 0 } };
const added = (content, o = {}) => ({
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
  ...o,
});
const LLAMA3_RE =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

const SPECS = [
  {
    name: "bytelevel_strings",
    about: "GPT-2: ByteLevel pre-tokenizer (its regex), merges as \"a b\" strings, ByteLevel decoder",
    alphabet: "bytelevel",
    merges_as: "strings",
    added: [added("<|endoftext|>", { in_vocab: true })],
    pre_tokenizer: bl(),
    post_processor: bl({ trim_offsets: false }),
    decoder: bl(),
    texts: ["<|endoftext|>", "a<|endoftext|>b", "text <|endoftext|> text", "<|endoftext|><|endoftext|>"],
  },
  {
    name: "bytelevel_pairs_bos_eos",
    about: "ByteLevel with add_prefix_space, merges as pairs, TemplateProcessing <s> $A </s>",
    alphabet: "bytelevel",
    merges_as: "pairs",
    added: [added("<s>", { in_vocab: true }), added("</s>", { in_vocab: true })],
    pre_tokenizer: bl({ add_prefix_space: true }),
    post_processor: "<s> $A </s>",
    decoder: bl(),
    texts: ["<s>", "</s>", "<s>Hello</s>", " <s> x </s> "],
  },
  {
    name: "llama3_ignore_merges",
    about: "Llama 3: Split regex (Isolated) + ByteLevel without regex, ignore_merges, whole words in the vocab",
    alphabet: "bytelevel",
    merges_as: "strings",
    model: { ignore_merges: true },
    extra_vocab: ["\u0120quickly", "\u0120jumps", "Hello", "\u0120sword", "\u0120wordy", "123"],
    added: [
      added("<|begin_of_text|>"),
      added("<|eot_id|>"),
      added("<|reserved_special_token_0|>"),
    ],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [split({ Regex: LLAMA3_RE }, "Isolated"), bl({ use_regex: false })],
    },
    post_processor: { type: "Sequence", processors: [bl({ trim_offsets: false }), "<|begin_of_text|> $A"] },
    decoder: bl(),
    texts: ["<|begin_of_text|>Hello<|eot_id|>", "x <|reserved_special_token_0|> y"],
  },
  {
    name: "bytefallback_llama2",
    about: "Llama 2 / Gemma 1: Prepend + Replace normalizers, no pre-tokenizer, byte_fallback, fuse_unk, Strip decoder",
    alphabet: "bytefallback",
    merges_as: "strings",
    model: { unk_token: "<unk>", fuse_unk: true, byte_fallback: true },
    added: [added("<unk>", { in_vocab: true }), added("<s>", { in_vocab: true }), added("</s>", { in_vocab: true })],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "\u2581" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    post_processor: "<s> $A",
    texts: ["<s>Hello</s>", "<unk>", " <s> ", "\u00e9\u00e8"],
  },
  {
    name: "bytefallback_ascii_strip2",
    about: "byte_fallback with only ASCII byte tokens (others become <unk>, not fused), Strip of 2 leading spaces",
    alphabet: "bytefallback_ascii",
    merges_as: "pairs",
    model: { unk_token: "<unk>", fuse_unk: false, byte_fallback: true },
    added: [added("<unk>", { in_vocab: true }), added("<eos>", { in_vocab: true })],
    normalizer: { type: "Replace", pattern: { String: " " }, content: "\u2581" },
    pre_tokenizer: split({ String: "\u2581" }, "MergedWithNext"),
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        // (a stop count would make the Rust decoder panic on strings shorter than it)
        { type: "Strip", content: " ", start: 2, stop: 0 },
      ],
    },
    post_processor: "$A <eos>",
    texts: ["  two leading spaces", "   three", "x<eos>  ", "\u00e9 \u00e9", "\u00e9\u0001x \u00e9\u0007\u00e9\u00e8", "\u65e5\u0001\u65e5\u672c\u0002x"],
  },
  {
    name: "metaspace_first",
    about: "Metaspace pre-tokenizer and decoder, prepend_scheme first, split; added tokens in between",
    alphabet: "bytefallback",
    merges_as: "strings",
    model: { unk_token: "<unk>", fuse_unk: true, byte_fallback: true },
    added: [
      added("<unk>", { in_vocab: true }),
      added("<sep>"),
      added("[X]", { special: false, normalized: true }),
    ],
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: true },
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "first", split: true },
    texts: ["Hello <sep> world", "<sep>Hello", "<sep> Hello", "a[X]b [X] c", "[X]start", "x<sep>y<sep>"],
  },
  {
    name: "metaspace_always_nosplit",
    about: "Metaspace prepend_scheme always, split false (one word per segment), NFC",
    alphabet: "bytefallback",
    merges_as: "pairs",
    model: { unk_token: "<unk>", byte_fallback: true },
    added: [added("<unk>", { in_vocab: true }), added("<sep>")],
    normalizer: { type: "NFC" },
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false },
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false },
    texts: ["Hello <sep> world", "<sep>Hello", "a<sep>b"],
  },
  {
    name: "metaspace_never_nfkc_unk",
    about: "Metaspace prepend_scheme never, NFKC, <unk> without byte fallback and without fusing",
    alphabet: "chars",
    merges_as: "strings",
    model: { unk_token: "<unk>", fuse_unk: false },
    added: [added("<unk>", { in_vocab: true })],
    normalizer: { type: "NFKC" },
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "never", split: true },
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "never", split: true },
    texts: ["\u00bd \u2460 \ufb01"],
  },
  {
    name: "added_flags",
    about: "added tokens with lstrip, rstrip, single_word, normalized true/false, special or not; Lowercase",
    alphabet: "bytelevel",
    merges_as: "strings",
    added: [
      added("<l>", { lstrip: true }),
      added("<r>", { rstrip: true }),
      added("<lr>", { lstrip: true, rstrip: true }),
      added("word", { special: false, single_word: true, normalized: true }),
      added("Hello", { special: false, normalized: true }),
      added("CASE", { special: false, normalized: false }),
      added("<mask>", { lstrip: true, special: true }),
      added("ab", { special: false, single_word: true, normalized: false }),
      added("<a>", {}),
      added("<a><b>", {}),
      added("\u2581\u2581", { special: false }),
      added("gap", { special: false, normalized: true, id: 5000 }),
    ],
    normalizer: { type: "Lowercase" },
    pre_tokenizer: bl(),
    decoder: bl(),
    post_processor: bl(),
    texts: [
      "x <l> y",
      "x   <l>   y",
      "x <r>   y",
      "x  <lr>  y",
      "<l><r><lr>",
      "word words sword word_x word.",
      "a word, a Word, WORD",
      "Hello HELLO hello",
      "CASE case Case",
      "a <mask> b",
      "x<mask>y",
      "ab abc cab ab.ab _ab",
      "<a><b> <a> <b> <a><a><b>",
      "\u2581\u2581 \u2581\u2581\u2581",
      "gap gaps",
    ],
  },
  {
    name: "nfd_strip_lower_wordpiece_style",
    about: "NFD + StripAccents + Lowercase + Strip, Whitespace pre-tokenizer, ## prefix and </w> suffix, no decoder",
    alphabet: "chars",
    merges_as: "strings",
    model: { unk_token: "[UNK]", continuing_subword_prefix: "##", end_of_word_suffix: "</w>" },
    added: [added("[UNK]", { in_vocab: true }), added("[CLS]", { in_vocab: true }), added("[SEP]", { in_vocab: true })],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "NFD" },
        { type: "StripAccents" },
        { type: "Lowercase" },
        { type: "Strip", strip_left: true, strip_right: true },
      ],
    },
    pre_tokenizer: { type: "Whitespace" },
    post_processor: { type: "BertProcessing", sep: ["[SEP]", 2], cls: ["[CLS]", 1] },
    texts: ["[CLS] hello [SEP]", "  \u00c9COLE  "],
  },
  {
    name: "split_removed_punct",
    about: "Split on whitespace (Removed) then Punctuation (Isolated), NFKD",
    alphabet: "chars",
    merges_as: "pairs",
    model: { unk_token: "[UNK]" },
    added: [added("[UNK]", { in_vocab: true })],
    normalizer: { type: "NFKD" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [split({ Regex: "\\s+" }, "Removed"), { type: "Punctuation", behavior: "Isolated" }],
    },
    texts: [],
  },
  {
    name: "split_isolated_invert_digits",
    about: "Split on letters, Isolated, invert; Digits (runs); RobertaProcessing",
    alphabet: "bytelevel",
    merges_as: "strings",
    added: [added("<s>", { in_vocab: true }), added("</s>", { in_vocab: true })],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        split({ Regex: "\\p{L}+" }, "Isolated", true),
        { type: "Digits", individual_digits: false },
        bl({ use_regex: false }),
      ],
    },
    post_processor: {
      type: "RobertaProcessing",
      sep: ["</s>", 1],
      cls: ["<s>", 0],
      trim_offsets: true,
      add_prefix_space: false,
    },
    decoder: bl(),
    texts: [],
  },
  {
    name: "split_merged_previous",
    about: "Split on \"-\" MergedWithPrevious, Split on a space MergedWithPrevious, individual Digits",
    alphabet: "bytelevel",
    merges_as: "pairs",
    added: [],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        split({ String: "-" }, "MergedWithPrevious"),
        split({ String: " " }, "MergedWithPrevious"),
        { type: "Digits", individual_digits: true },
        bl({ use_regex: false }),
      ],
    },
    decoder: bl(),
    texts: ["a--b - -c-", "-start end-", "---"],
  },
  {
    name: "split_merged_next",
    about: "Split on punctuation MergedWithNext, then WhitespaceSplit; Lowercase; no decoder",
    alphabet: "chars",
    merges_as: "strings",
    model: { unk_token: "[UNK]", fuse_unk: true },
    added: [added("[UNK]", { in_vocab: true })],
    normalizer: { type: "Lowercase" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [split({ Regex: "[,.!?;:]" }, "MergedWithNext"), { type: "WhitespaceSplit" }],
    },
    texts: ["a,b.c!!d", ",start. end.", "..."],
  },
  {
    name: "split_contiguous",
    about: "Split on digits Contiguous, Punctuation Contiguous, Split invert Removed",
    alphabet: "bytelevel",
    merges_as: "strings",
    added: [],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        split({ Regex: "[0-9]" }, "Contiguous"),
        { type: "Punctuation", behavior: "Contiguous" },
        split({ Regex: "\\S+" }, "Removed", true),
        bl({ use_regex: false }),
      ],
    },
    decoder: bl(),
    texts: ["a1b22c333 ...,,", "12 34", "!?!? ok"],
  },
  {
    name: "bert_pretok_replace_regex",
    about: "BertPreTokenizer; Replace with a regex; Fuse + Replace decoder",
    alphabet: "chars",
    merges_as: "pairs",
    model: { unk_token: "[UNK]" },
    added: [added("[UNK]", { in_vocab: true }), added("[MASK]", { lstrip: true })],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Replace", pattern: { Regex: "[0-9]+" }, content: "#" },
        { type: "Replace", pattern: { Regex: "\\s+" }, content: " " },
      ],
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    decoder: {
      type: "Sequence",
      decoders: [{ type: "Fuse" }, { type: "Replace", pattern: { String: "#" }, content: "<num>" }],
    },
    texts: ["a [MASK] b", "x  [MASK]", "abc123def 45"],
  },
  {
    name: "nfkc_lower_template_multi",
    about: "NFKC + Lowercase + Replace, ByteLevel with regex, a template token of two ids and a suffix",
    alphabet: "bytelevel",
    merges_as: "pairs",
    added: [added("<bos>", { in_vocab: true }), added("<eos>", { in_vocab: true }), added("<x>", { in_vocab: true })],
    normalizer: {
      type: "Sequence",
      normalizers: [{ type: "NFKC" }, { type: "Lowercase" }, { type: "Replace", pattern: { String: "ß" }, content: "ss" }],
    },
    pre_tokenizer: bl({ add_prefix_space: true }),
    post_processor: "<bos>+<x> $A <eos>",
    decoder: bl(),
    texts: ["<bos>", "STRASSE Straße"],
  },
  {
    name: "metaspace_legacy_prefix",
    about: "the older Metaspace spelling (add_prefix_space, no prepend_scheme), Strip normalizer (left only)",
    alphabet: "bytefallback",
    merges_as: "strings",
    model: { unk_token: "<unk>", byte_fallback: true },
    added: [added("<unk>", { in_vocab: true }), added("<s>", { in_vocab: true })],
    normalizer: { type: "Strip", strip_left: true, strip_right: false },
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", add_prefix_space: true },
    decoder: { type: "Metaspace", replacement: "\u2581", add_prefix_space: true },
    post_processor: "<s> $A",
    texts: ["<s> after", "  <s>x"],
  },
  {
    name: "split_empty_matches",
    // (not a Replace normalizer whose regex matches the empty string: what Rust makes of the text it
    // inserts there depends on its offset alignments, and then differs from its own normalize_str)
    about: "a Split regex that matches the empty string (MergedWithNext)",
    alphabet: "bytelevel",
    merges_as: "pairs",
    added: [added("<e>", {})],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [split({ Regex: "a*" }, "MergedWithNext"), bl({ use_regex: false })],
    },
    decoder: bl(),
    texts: ["banana", "aaa bbb aaa", "zzz z", "<e>aa<e>", "xyz"],
  },
  {
    name: "per_token_strip_decoder",
    about: "a Strip decoder before Fuse (it strips every token), Punctuation MergedWithPrevious, NFKD + StripAccents",
    alphabet: "bytefallback",
    merges_as: "pairs",
    model: { unk_token: "<unk>", byte_fallback: true, fuse_unk: true },
    added: [added("<unk>", { in_vocab: true }), added("<s>", { in_vocab: true })],
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "NFKD" },
        { type: "StripAccents" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    pre_tokenizer: { type: "Punctuation", behavior: "MergedWithPrevious" },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
        { type: "Fuse" },
      ],
    },
    texts: ["\u00e9\u0001x \u00e9\u0007\u00e9", "a. b, c!"],
  },
  {
    name: "regex_classes",
    about: "\\w, \\d, \\s in Oniguruma's sense (Whitespace pre-tokenizer, Split regexes) on marks and other numbers",
    alphabet: "bytelevel",
    merges_as: "strings",
    added: [],
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        split({ Regex: "\\d+" }, "Isolated"),
        split({ Regex: "[^\\w\\s]+" }, "Isolated"),
        { type: "Whitespace" },
        bl({ use_regex: false }),
      ],
    },
    decoder: bl(),
    texts: [
      "e\u0301t\u00e9 a\u0308b",
      "\u00bd\u00b2 \u2163\u216b x\u203fy a_b",
      "\u0661\u0662\u0663\u0967 \u0915\u093f\u0928\u094d\u0926\u0940",
      "\u0e01\u0e34\u0e19 \u05e9\u05b8\u05c1",
      "tab\u000bvt\u001cfs\u0085nel\u200bzw\u2060wj\u180emvs",
    ],
  },
  {
    name: "no_pretokenizer_no_decoder",
    about: "BPE over the whole text (no pre-tokenizer), no decoder (tokens joined by spaces), no post-processor",
    alphabet: "chars",
    merges_as: "pairs",
    model: { unk_token: "?", fuse_unk: true },
    added: [added("?", { in_vocab: true, special: false })],
    texts: [],
  },
];

// ---- building --------------------------------------------------------------------------------------

const byteChars = (() => {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const map = new Array(256);
  bs.forEach((b, i) => (map[b] = String.fromCodePoint(cs[i])));
  return map; // byte -> character
})();
const hex2 = (b) => "<0x" + b.toString(16).toUpperCase().padStart(2, "0") + ">";

function postProcessor(spec, specialIds) {
  const p = spec.post_processor;
  if (p === undefined) return null;
  if (typeof p !== "string") {
    if (p.type === "Sequence")
      return { ...p, processors: p.processors.map((q) => postProcessor({ post_processor: q }, specialIds)) };
    return p;
  }
  // "<a>+<b> $A <c>": a template; "+" joins tokens into one special token of several ids
  const single = [];
  const specials = {};
  for (const part of p.split(" ")) {
    if (part === "$A") {
      single.push(SEQ_A);
      continue;
    }
    const toks = part.split("+");
    single.push(tplTok(part));
    specials[part] = { id: part, ids: toks.map((t) => specialIds[t]), tokens: toks };
  }
  return tpl(single, specials);
}

function tokenizerJson(spec, vocab, merges, addedTokens) {
  const model = {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    ...(spec.model || {}),
    vocab,
    merges,
  };
  const specialIds = {};
  for (const a of addedTokens) specialIds[a.content] = a.id;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: spec.normalizer ?? null,
    pre_tokenizer: spec.pre_tokenizer ?? null,
    post_processor: postProcessor(spec, specialIds),
    decoder: spec.decoder ?? null,
    model,
  };
}

// The words the tokenizer's normalizer and pre-tokenizer make of the training text, as symbols.
function trainingWords(spec, shell) {
  const norm = shell.getNormalizer();
  const pre = shell.getPreTokenizer();
  const words = [];
  for (const line of TRAIN.split("\n")) {
    const n = norm ? norm.normalizeString(line) : line;
    const parts = pre ? pre.preTokenizeString(n).map((x) => x[0]) : [n];
    for (const w of parts) {
      const chars = [...w];
      const p = spec.model?.continuing_subword_prefix || "";
      const s = spec.model?.end_of_word_suffix || "";
      words.push(chars.map((c, i) => (i > 0 ? p : "") + c + (i === chars.length - 1 ? s : "")));
    }
  }
  return words;
}

function build(spec) {
  const addedTokens = [];
  const vocab = {};
  let next = 0;
  const put = (t) => {
    if (!(t in vocab)) vocab[t] = next++;
  };
  for (const a of spec.added) if (a.in_vocab) put(a.content);
  if (spec.alphabet === "bytefallback") for (let b = 0; b < 256; b++) put(hex2(b));
  if (spec.alphabet === "bytefallback_ascii") for (let b = 0; b < 128; b++) put(hex2(b));
  if (spec.alphabet === "bytelevel") for (let b = 0; b < 256; b++) put(byteChars[b]);
  // a shell tokenizer (no merges) runs the normalizer and pre-tokenizer on the training text
  const shell = Tokenizer.fromString(JSON.stringify(tokenizerJson({ ...spec, model: {}, post_processor: undefined }, { ...vocab }, [], [])));
  let words = trainingWords(spec, shell);
  for (const w of words) for (const c of w) put(c);
  const prefix = spec.model?.continuing_subword_prefix || "";
  const merges = [];
  const nMerges = spec.n_merges ?? 300;
  for (let m = 0; m < nMerges; m++) {
    const counts = new Map();
    for (const w of words)
      for (let i = 0; i + 1 < w.length; i++) {
        const k = w[i] + "\u0000" + w[i + 1];
        counts.set(k, (counts.get(k) || 0) + 1);
      }
    let best = null;
    let bestN = 1; // a pair seen once is not worth a merge
    for (const [k, n] of counts) if (n > bestN || (n === bestN && best !== null && k < best)) [best, bestN] = [k, n];
    if (best === null) break;
    const [a, b] = best.split("\u0000");
    const merged = a + (prefix && b.startsWith(prefix) ? b.slice(prefix.length) : b);
    merges.push([a, b]);
    put(merged);
    words = words.map((w) => {
      const out = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === a && w[i + 1] === b) {
          out.push(merged);
          i++;
        } else out.push(w[i]);
      }
      return out;
    });
  }
  for (const t of spec.extra_vocab || []) put(t);
  let nextAdded = next;
  for (const a of spec.added) {
    const { in_vocab, id, ...fields } = a;
    addedTokens.push({ id: in_vocab ? vocab[a.content] : id ?? nextAdded++, ...fields });
  }
  const asStrings = spec.merges_as === "strings";
  if (asStrings && merges.some(([a, b]) => a.includes(" ") || b.includes(" ")))
    throw new Error(spec.name + ": a merge has a space; use pairs");
  const mergeList = merges.map(([a, b]) => (asStrings ? a + " " + b : [a, b]));
  return tokenizerJson(spec, vocab, mergeList, addedTokens);
}

// ---- expectations ----------------------------------------------------------------------------------

let seed = 12345;
const rand = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed % n;
};

async function expectations(spec, json) {
  const tok = Tokenizer.fromString(JSON.stringify(json));
  const vocabSize = tok.getVocabSize(true);
  const texts = [...TEXTS, ...spec.texts];
  const encode = [];
  for (const text of texts) {
    const e = { text };
    try {
      e.ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      e.ids_special = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      e.decode = await tok.decode(e.ids, false);
      e.decode_skip = await tok.decode(e.ids_special, true);
    } catch (err) {
      e.error = String(err);
    }
    encode.push(e);
  }
  // decode cases: every id in order, then random runs (invalid byte sequences, specials mixed in)
  const cases = [];
  const all = [];
  let maxId = 0;
  for (let i = 0; i < vocabSize + 50; i++) if (tok.idToToken(i) !== null) maxId = i;
  for (let i = 0; i <= maxId; i++) if (tok.idToToken(i) !== null) all.push(i);
  cases.push({ name: "every id", ids: all });
  for (let k = 0; k < 12; k++) {
    const ids = [];
    for (let j = 0; j < 16; j++) ids.push(all[rand(all.length)]);
    cases.push({ name: "random " + k, ids });
  }
  const bytes = all.filter((i) => /^<0x[0-9A-F]{2}>$/.test(tok.idToToken(i)));
  if (bytes.length) {
    for (let k = 0; k < 8; k++) {
      const ids = [];
      for (let j = 0; j < 10; j++) ids.push(rand(3) ? bytes[rand(bytes.length)] : all[rand(all.length)]);
      cases.push({ name: "bytes " + k, ids });
    }
  }
  for (const c of cases) {
    c.text = await tok.decode(c.ids, false);
    c.text_skip = await tok.decode(c.ids, true);
  }
  // C strings end at U+0000: a text holding one is written as hex as well (FIELD_hex, its UTF-8)
  const withHex = (o, keys) => {
    for (const k of keys)
      if (typeof o[k] === "string" && o[k].includes("\u0000")) o[k + "_hex"] = Buffer.from(o[k], "utf8").toString("hex");
  };
  for (const e of encode) withHex(e, ["decode", "decode_skip"]);
  for (const c of cases) withHex(c, ["text", "text_skip"]);
  const added = json.added_tokens.map((a) => ({ content: a.content, id: tok.tokenToId(a.content), special: a.special }));
  return { about: spec.about, vocab_size: vocabSize, added, encode, decode_cases: cases };
}

fs.mkdirSync(outDir, { recursive: true });
const result = {};
for (const spec of SPECS) {
  const json = build(spec);
  fs.writeFileSync(path.join(outDir, spec.name + ".json"), JSON.stringify(json, null, 1) + "\n");
  result[spec.name] = await expectations(spec, json);
}
// one line per entry, as tests/tok/expect_*.json
const lines = ["{", `"generated_by": "tests/ref/tok_synthetic.mjs; npm tokenizers ${libVersion} (Rust tokenizers)",`, '"tokenizers": {'];
const names = Object.keys(result);
names.forEach((n, i) => {
  const r = result[n];
  lines.push(`${JSON.stringify(n)}: {`);
  lines.push(`"about": ${JSON.stringify(r.about)}, "vocab_size": ${r.vocab_size},`);
  lines.push(`"added": ${JSON.stringify(r.added)},`);
  lines.push('"encode": [');
  r.encode.forEach((e, k) => lines.push(JSON.stringify(e) + (k + 1 < r.encode.length ? "," : "")));
  lines.push('],');
  lines.push('"decode_cases": [');
  r.decode_cases.forEach((e, k) => lines.push(JSON.stringify(e) + (k + 1 < r.decode_cases.length ? "," : "")));
  lines.push("]");
  lines.push("}" + (i + 1 < names.length ? "," : ""));
});
lines.push("}", "}");
fs.writeFileSync(path.join(outDir, "expect.json"), lines.join("\n") + "\n");
console.log(`wrote ${names.length} tokenizers and expect.json to ${outDir}`);
