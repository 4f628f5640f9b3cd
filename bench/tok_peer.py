#!/usr/bin/env python3
"""The peer of bench/bench_tokenize.c: Hugging Face's Rust tokenizers (the `tokenizers` Python
package) on the same tokenizer.json and the same text, one thread.

    RAYON_NUM_THREADS=1 python3 bench/tok_peer.py DIR TEXTFILE [RUNS]

Prints the same lines as bench_tokenize: load time (median), encode MB/s of the whole text in one
call (no special tokens), encode MB/s line by line, decode MB/s, and the token count, which must
equal bench_tokenize's."""
import os
import statistics
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from tokenizers import Tokenizer  # noqa: E402

d, path = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
raw = open(path, "rb").read()
text = raw.decode("utf-8")
lines = text.splitlines(keepends=True)


def med(f):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = f()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), r


tl, tok = med(lambda: Tokenizer.from_file(os.path.join(d, "tokenizer.json")))
print("load: %.1f ms (median of %d), vocab %d" % (tl * 1e3, runs, tok.get_vocab_size()))
te, enc = med(lambda: tok.encode(text, add_special_tokens=False))
ids = enc.ids
print("encode: %.1f MB/s (%d bytes -> %d tokens, %.1f ms, median of %d)"
      % (len(raw) / te / 1e6, len(raw), len(ids), te * 1e3, runs))
tn, n_line = med(lambda: sum(len(tok.encode(s, add_special_tokens=False).ids) for s in lines))
print("encode by line: %.1f MB/s (%d lines -> %d tokens)" % (len(raw) / tn / 1e6, len(lines), n_line))
td, _ = med(lambda: tok.decode(ids, skip_special_tokens=False))
print("decode: %.1f MB/s (%.1f ms)" % (len(raw) / td / 1e6, td * 1e3))
