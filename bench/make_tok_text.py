#!/usr/bin/env python3
"""Writes the mixed text the tokenizer benchmark encodes (bench/bench_tokenize.c and
bench/tok_peer.py read the same file).

    python3 bench/make_tok_text.py OUT.txt [MEGABYTES]

Deterministic: the corpus strings of tests/tok/corpus.json (prose, code, CJK, Arabic, Devanagari,
Cyrillic, emoji, combining marks, whitespace runs, digits, ...) and this repository's C sources and
Markdown, shuffled with a fixed seed and repeated (in a new order each round) up to the size asked
(default 8 MB). Lines are kept whole so that the per-line mode encodes realistic prompts."""
import glob
import json
import os
import random
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1]
size = int(float(sys.argv[2]) * 1e6) if len(sys.argv) > 2 else 8_000_000

pieces = [s["text"] for s in json.load(open(os.path.join(root, "tests/tok/corpus.json")))["strings"]
          if s["text"].strip()]
for pat in ("src/**/*.c", "src/**/*.h", "tools/*.c", "*.md", "tests/tok/README.md"):
    for f in sorted(glob.glob(os.path.join(root, pat), recursive=True)):
        text = open(f, encoding="utf-8").read()
        # paragraphs of code or prose, not whole files, so that the mix is fine-grained
        pieces += [p for p in text.split("\n\n") if p.strip()]

rng = random.Random(1234)
parts, n = [], 0
while n < size:
    order = pieces[:]
    rng.shuffle(order)
    for p in order:
        b = (p.replace("\r", "") + "\n").encode("utf-8")
        parts.append(b)
        n += len(b)
        if n >= size:
            break
with open(out, "wb") as f:
    f.write(b"".join(parts))
print("%s: %d bytes, %d pieces" % (out, n, len(parts)))
