#!/usr/bin/env python3
"""A random cross-check of the tokenizers and chat templates against Hugging Face, wider than the
committed corpus (tests/tok): seeded random texts and conversations, encoded and rendered here by
the library (tok_fuzz_ours.c) and on the GPU machine by Rust `tokenizers` and transformers'
apply_chat_template; nothing of it is committed but the two programs.

    # here (the six tokenizer folders as in tests/tok/README.md, "Regenerating": /tmp/tokplain)
    python3 tests/ref/tok_fuzz.py gen --seed 8 --texts 8000 --chats 1500 --out .carry/fuzz
    make CUDA=0 BUILD=build-cpu build-cpu/libinfer.a
    cc -O2 -Iinclude tests/ref/tok_fuzz_ours.c build-cpu/libinfer.a -lpcre2-8 -lutf8proc -lcjson \\
        -lpthread -lm -o /tmp/tok_fuzz_ours
    for n in gemma3 llama3 llama3_1 llama3_2 qwen2_5 qwen3; do
        /tmp/tok_fuzz_ours /tmp/tokplain/$n .carry/fuzz > /tmp/fuzz_ours_$n.json; done
    # device run(carry=[".carry"]), with .carry/tok.tar.xz made as tests/tok/README.md says:
    mkdir -p /tmp/t /tmp/o && tar -xJf .carry/tok.tar.xz -C /tmp/t && HF_HUB_OFFLINE=1 \\
        python3 tests/ref/tok_fuzz.py ref --tok /tmp/t --in .carry/fuzz --out /tmp/o && \\
        tar czf $OUT/o.tgz -C /tmp/o .
    # back here:
    mkdir -p /tmp/fuzz_ref && tar xzf /work/.device/N/o.tgz -C /tmp/fuzz_ref
    python3 tests/ref/tok_fuzz.py compare --in .carry/fuzz --ref /tmp/fuzz_ref --ours /tmp

For every text and tokenizer: the ids with add_special_tokens False and True, decode(ids,
skip_special_tokens=False) of the first and decode(..., True) of the second.  For every
conversation: apply_chat_template(messages, tokenize=False, add_generation_prompt, **kwargs) or
the exception it raises (ours must fail there too).  kwargs always hold date_string (Llama 3.2's
template reads the clock otherwise) and sometimes enable_thinking.

The texts join random pieces: words of many scripts and cases, contractions, runs of whitespace of
every kind, random code points from 38 Unicode blocks (astral planes, combining marks, tags,
variation selectors, noncharacters included), digit runs, the special-token strings of every
family and near-misses of them, code, punctuation runs and long repeats.  The generator needs only
the standard library; the same seed gives the same files.
"""
import argparse
import json
import os
import random
import sys

NAMES = ["gemma3", "llama3", "llama3_1", "llama3_2", "qwen2_5", "qwen3"]

BLOCKS = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x530, 0x58f),
          (0x590, 0x5ff), (0x600, 0x6ff), (0x900, 0x97f), (0x980, 0x9ff), (0xe00, 0xe7f), (0x10a0, 0x10ff),
          (0x1100, 0x11ff), (0x1e00, 0x1eff), (0x2000, 0x206f), (0x2070, 0x209f), (0x20a0, 0x20cf),
          (0x2100, 0x214f), (0x2190, 0x22ff), (0x2500, 0x257f), (0x3000, 0x303f), (0x3040, 0x30ff),
          (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xf900, 0xfaff), (0xfe00, 0xfe0f), (0xff00, 0xffef),
          (0xfff0, 0xfffd), (0x10000, 0x1007f), (0x1d400, 0x1d7ff), (0x1f1e6, 0x1f1ff), (0x1f300, 0x1f5ff),
          (0x1f3fb, 0x1f3ff), (0x1f600, 0x1f64f), (0x1f680, 0x1f6ff), (0x1f900, 0x1f9ff), (0x20000, 0x2a6df),
          (0xe0000, 0xe007f)]
SPACES = [" ", "  ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u00a0", "\u3000", "\u200b", "\u2028", "\x0b",
          "\x0c", "   \t  ", "\n \n", "\u2009", "\u202f"]
WORDS = ["the", "The", "THE", "hello", "world", "don't", "I'm", "we'll", "they're", "it's", "He'd", "you've",
         "O'Neil", "na\u00efve", "caf\u00e9", "Stra\u00dfe", "\ufb01ne", "\u0130stanbul", "\u01c5", "\u03a9mega",
         "\u03a3\u0391\u03a3", "\u65e5\u672c\u8a9e", "\ud55c\uad6d\uc5b4", "\u0e44\u0e17\u0e22",
         "\u05e2\u05d1\u05e8\u05d9\u05ea", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
         "\u0939\u093f\u0928\u094d\u0926\u0940", "\U0001d518\U0001d52b\U0001d526", "x\u00b2", "\u00bd", "\u2460",
         "\u210c", "\u2026", "\u2014", "\u201cquoted\u201d", "'single'", "\u00abguillemets\u00bb", "$100",
         "3.14159", "1,000,000", "2024-01-01", "0x1F", "1e-9", "foo_bar", "fooBar", "__init__",
         "http://ex.com/a?b=c&d=e", "a@b.co", "\U0001f44d\U0001f3fd",
         "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\U0001f3f3\ufe0f\u200d\U0001f308",
         "\U0001f1fa\U0001f1f8", "\u2764\ufe0f", "e\u0301", "a\u0308\u0304", "\u1100\u1161\u11a8", "\u00c5",
         "A\u030a", "\uff8a\uff9d\uff76\uff78", "\uff46\uff55\uff4c\uff4c"]
SPECIALS = ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<pad>", "<unk>", "<|begin_of_text|>",
            "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>",
            "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>",
            "<mask>", "<|reserved_special_token_5|>", "<start_of_image>", "<|im_start", "im_end|>",
            "< |eot_id| >", "<s>", "</s>", "[INST]"]
CODE = ["def f(x):\n    return x**2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
        "SELECT * FROM t WHERE id=3;", "<div class=\"a\">&amp;</div>", "    if x:\n        pass",
        "#include <stdio.h>", "x = [1,2,3]  # comment", "fn main() -> Result<(), Box<dyn Error>> {}",
        "$ ls -la | grep foo", "{\"key\": [true, null, 1.5e3]}"]
REPEATED = ["a", " ", "ab", "\U0001f642", "\n", "=", "-", "\u093e", "\u306e"]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def code_point(self):
        lo, hi = self.r.choice(BLOCKS)
        while True:
            c = self.r.randint(lo, hi)
            if not 0xd800 <= c <= 0xdfff:
                return chr(c)

    def piece(self):
        r, x = self.r.random(), self.r
        if r < 0.25:
            return x.choice(WORDS)
        if r < 0.40:
            return x.choice(SPACES)
        if r < 0.55:
            return "".join(self.code_point() for _ in range(x.randint(1, 6)))
        if r < 0.63:
            return "".join(x.choice("0123456789") for _ in range(x.randint(1, 14)))
        if r < 0.70:
            return x.choice(SPECIALS)
        if r < 0.76:
            return x.choice(CODE)
        if r < 0.82:
            return x.choice("!?.,;:'\"()[]{}<>/\\|-_=+*&^%$#@~`") * x.randint(1, 5)
        if r < 0.86:
            return x.choice(REPEATED) * x.randint(2, 200)
        if r < 0.93:
            w = x.choice(WORDS)
            return w.upper() if x.random() < 0.5 else w.capitalize()
        return "".join(chr(x.randint(0x21, 0x7e)) for _ in range(x.randint(1, 12)))

    def text(self, sizes):
        k = self.r.choice(sizes)
        spaced = self.r.random() < 0.5
        return "".join((" " if spaced and j else "") + self.piece() for j in range(k))

    def message_text(self):
        s = self.text([0, 1, 1, 2, 3, 6, 12])
        r = self.r.random()
        if r < 0.1:
            return "  " + s + "\n\n"
        if r < 0.15:
            return "<think>\n" + s + "\n</think>\n\n" + self.text([1, 3])
        return s

    def conversation(self):
        msgs = []
        if self.r.random() < 0.4:
            msgs.append({"role": "system", "content": self.message_text()})
        for j in range(self.r.randint(1, 6)):
            role = "user" if j % 2 == 0 else "assistant"
            if self.r.random() < 0.04:  # out of turn: some templates raise
                role = self.r.choice(["assistant", "user", "system", "tool"])
            msgs.append({"role": role, "content": self.message_text()})
        kw = {"date_string": "26 Jul 2024"}
        if self.r.random() < 0.5:
            kw["enable_thinking"] = self.r.random() < 0.5
        return {"messages": msgs, "add_generation_prompt": self.r.random() < 0.7, "kwargs": kw}


def gen(a):
    g = Gen(a.seed)
    os.makedirs(a.out, exist_ok=True)
    texts = [g.text([1, 1, 2, 3, 5, 8, 13, 30]) for _ in range(a.texts)]
    chats = [g.conversation() for _ in range(a.chats)]
    with open(os.path.join(a.out, "texts.json"), "w") as f:
        json.dump({"seed": a.seed, "strings": texts}, f, ensure_ascii=False)
    with open(os.path.join(a.out, "chats.json"), "w") as f:
        json.dump({"seed": a.seed, "cases": chats}, f, ensure_ascii=False)
    print(len(texts), "texts,", sum(map(len, texts)), "characters;", len(chats), "conversations")


def ref(a):
    from tokenizers import Tokenizer
    import transformers
    texts = json.load(open(os.path.join(a.inp, "texts.json")))["strings"]
    chats = json.load(open(os.path.join(a.inp, "chats.json")))["cases"]
    os.makedirs(a.out, exist_ok=True)
    for n in NAMES:
        tok = Tokenizer.from_file(os.path.join(a.tok, n, "tokenizer.json"))
        r = {"ids": [], "ids_special": [], "decode": [], "decode_skip": [], "chat": []}
        for s in texts:
            plain = tok.encode(s, add_special_tokens=False).ids
            special = tok.encode(s, add_special_tokens=True).ids
            r["ids"].append(plain)
            r["ids_special"].append(special)
            r["decode"].append(tok.decode(plain, skip_special_tokens=False))
            r["decode_skip"].append(tok.decode(special, skip_special_tokens=True))
        hf = transformers.AutoTokenizer.from_pretrained(os.path.join(a.tok, n))
        for c in chats:
            try:
                r["chat"].append(hf.apply_chat_template(c["messages"], tokenize=False,
                                                        add_generation_prompt=c["add_generation_prompt"],
                                                        **c["kwargs"]))
            except Exception as e:  # the template's raise_exception, or a jinja error
                r["chat"].append({"error": type(e).__name__ + ": " + str(e)})
        with open(os.path.join(a.out, "ref_%s.json" % n), "w") as f:
            json.dump(r, f, ensure_ascii=False)
        print(n, "done", flush=True)


def first_diff(a, b):
    return next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))


def compare(a):
    texts = json.load(open(os.path.join(a.inp, "texts.json")))["strings"]
    chats = json.load(open(os.path.join(a.inp, "chats.json")))["cases"]
    bad_total = 0
    for n in NAMES:
        r = json.load(open(os.path.join(a.ref, "ref_%s.json" % n)))
        o = json.load(open(os.path.join(a.ours, "fuzz_ours_%s.json" % n)))
        counts = {}
        for key in ("ids", "ids_special", "decode", "decode_skip", "chat"):
            items = texts if key != "chat" else chats
            bad = []
            for i in range(len(items)):
                x, y = r[key][i], o[key][i]
                if isinstance(x, dict) or isinstance(y, dict):  # an error on either side: both must fail
                    if not (isinstance(x, dict) and isinstance(y, dict)):
                        bad.append(i)
                elif x != y:
                    bad.append(i)
            counts[key] = "%d/%d" % (len(items) - len(bad), len(items))
            bad_total += len(bad)
            for i in bad[:3]:
                x, y = r[key][i], o[key][i]
                print("  %s %s #%d: %r" % (n, key, i, (items[i] if key != "chat" else items[i]["messages"])[:200]))
                if isinstance(x, dict) or isinstance(y, dict):
                    print("    ref  %r\n    ours %r" % (str(x)[:200], str(y)[:200]))
                else:
                    j = first_diff(x, y)
                    print("    ref  %r\n    ours %r" % (x[max(0, j - 40):j + 40], y[max(0, j - 40):j + 40]))
        errors = sum(isinstance(x, dict) for x in r["chat"])
        print("%-9s same: %s (the reference raised on %d conversations)" %
              (n, ", ".join("%s %s" % kv for kv in counts.items()), errors))
    print("differences:", bad_total)
    return 1 if bad_total else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--texts", type=int, default=8000)
    p.add_argument("--chats", type=int, default=1500)
    p.add_argument("--out", required=True)
    p = sub.add_parser("ref")
    p.add_argument("--tok", required=True, help="folder of <name>/tokenizer.json, tokenizer_config.json")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--ref", required=True)
    p.add_argument("--ours", required=True, help="folder of fuzz_ours_<name>.json")
    a = ap.parse_args()
    return {"gen": gen, "ref": ref, "compare": compare}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
