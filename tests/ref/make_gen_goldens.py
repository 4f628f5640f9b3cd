#!/usr/bin/env python3
"""Greedy-generation goldens (tests/fixtures/<name>/generate.json) from Hugging Face transformers.

How to run (on the GPU machine of the `device` tool: python3 there has torch, transformers 5.17,
tokenizers 0.23.2; everything runs on the CPU in float32; nothing is downloaded). The fixture
folders must already hold their tokenizers (tests/ref/make_fixture_tokenizers.py):

    HF_HUB_OFFLINE=1 python3 tests/ref/make_gen_goldens.py [--only name,name] [--fixtures DIR]

Model: the fixture's transformers class (config.json "architectures"), from_pretrained(folder,
dtype=float32, attn_implementation="eager"): the stored bf16 weights in float32, as
make_fixtures.py computes logits.npy (checked: this model reproduces logits.npy). A fresh copy of
the loaded model serves each prompt: transformers' dynamic RoPE keeps state between calls.

Prompts, per fixture:
  text_short / text_medium / text_long  a prefix (whole words) of one paragraph (English, other
        scripts, an emoji, an NFD accent, digits, code) of at least 5, 20 and 60 tokens, or one word less
        where the next word would pass 7, 24 or 66 (so 5-6, 13-22 and 60-64 tokens in the files),
        encoded with add_special_tokens=True (the family's BOS where it has one): shorter and longer
        than the sliding windows (8);
  ids_1 / ids_12   token ids (numpy default_rng(meta.json seed + 1)), no tokenizer involved;
  chat_user / chat_multi   conversations rendered by transformers' apply_chat_template(messages,
        tokenize=False, add_generation_prompt=True, **kwargs) with kwargs {"date_string":
        "26 Jul 2024"} (+ "enable_thinking": false for Qwen 3's chat_multi), encoded with
        add_special_tokens=False (the template writes the BOS).  Gemma 2's template refuses a
        system message: chat_multi drops it there (recorded in "note"); a conversation whose prompt + 24
        tokens would not fit 128 positions keeps only its last message (recorded in "note" too).
Prompt ids come from the Rust tokenizer (tokenizers.Tokenizer.from_file, the reference of record)
and are checked against transformers' AutoTokenizer.

Generation: model.generate(input_ids, attention_mask, do_sample=False, num_beams=1,
max_new_tokens=24) with EOS switched off: eos_token_id, pad_token_id and bos_token_id set to None
in the GenerationConfig passed, in model.generation_config (which generate would otherwise fill
unset fields from) and in the model's config (which does not change the forward), so generation cannot stop early and no EOS-related processor
(min_length, ...) exists.  Checked for every prompt: exactly 24 new tokens; the processed scores
equal the raw logits at every step (no logits processor changed anything); every token is the
argmax of its raw logits.  Recorded per step: margin = top-1 minus top-2 raw logit (float32);
steps with margin < 1e-4 are counted (the C test accepts a different token only there and stops
comparing after it).  Also recorded: teacher_forced_max_abs_diff, max |step logits - logits of one
uncached forward over prompt + generated| (~1e-6; not small for llama_dynamic past 32 positions,
where transformers' dynamic RoPE rotates the cached keys with the base of the length at the time).

Decoded text: Rust decode(generated, skip_special_tokens=False) -> text_out and True ->
text_out_skip; transformers' decode is compared and any difference recorded under hf_decode.

Output: tests/fixtures/<name>/generate.json (format: tests/ref/README.md).
"""
import argparse
import copy
import hashlib
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, HERE)
from make_fixture_tokenizers import FAMILY_OF  # noqa: E402

MAX_NEW = 24
CONTEXT = 128          # every prompt + 24 fits; the C test loads the models with this context
MARGIN_TOL = 1e-4
DATE = "26 Jul 2024"

PARAGRAPH = (
    "The little cat sat by the window. Привет! 你好。 🙂 cafe\u0301 Ein Hund lief über die Straße; "
    "in 2024 it counted 17 drops, then 350 more.\n"
    "def double(x):\n    return x * 2\n"
    "That's all, isn't it? \"Hello, hello\", said the bird. The end of the story came slowly, one "
    "small word after another, until the whole page was full and the cat fell asleep in the warm "
    "light of the quiet garden."
)
TEXT_TARGETS = [("text_short", 5, 7), ("text_medium", 20, 24), ("text_long", 60, 66)]

CHATS = [
    ("chat_user", [{"role": "user", "content": "Hello! Who are you?"}]),
    ("chat_multi", [{"role": "system", "content": "You answer briefly."},
                    {"role": "user", "content": "Name a color."},
                    {"role": "assistant", "content": "Blue."},
                    {"role": "user", "content": "And a fruit?"}]),
]

np = torch = transformers = None
WARN = []


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def text_prompt(rust, lo, hi):
    """The shortest whole-word prefix of PARAGRAPH with at least lo tokens (BOS counted)."""
    words = PARAGRAPH.split(" ")
    for k in range(1, len(words) + 1):
        t = " ".join(words[:k])
        n = len(rust.encode(t, add_special_tokens=True).ids)
        if n >= lo:
            if n > hi and k > 1:
                t = " ".join(words[:k - 1])
            return t
    raise RuntimeError("the paragraph has fewer than %d tokens" % lo)


def load_model(cls, folder):
    m = cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
    assert m.config._attn_implementation == "eager"
    for p in m.parameters():
        assert p.dtype == torch.float32
    return m


def greedy(pristine, prompt):
    m = copy.deepcopy(pristine)
    for k in ("eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(m.generation_config, k, None)
        for c in {id(m.config): m.config, id(m.config.get_text_config()): m.config.get_text_config()}.values():
            if hasattr(c, k):
                setattr(c, k, None)
    gc = transformers.GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=MAX_NEW,
                                       eos_token_id=None, pad_token_id=None, bos_token_id=None)
    x = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = m.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc,
                         return_dict_in_generate=True, output_scores=True, output_logits=True)
    seq = out.sequences[0].tolist()
    assert seq[:len(prompt)] == list(prompt), "generate changed the prompt"
    gen = seq[len(prompt):]
    assert len(gen) == MAX_NEW, "generate made %d tokens, not %d" % (len(gen), MAX_NEW)
    raw = torch.stack([t[0] for t in out.logits]).to(torch.float32)
    proc = torch.stack([t[0] for t in out.scores]).to(torch.float32)
    assert raw.shape == (MAX_NEW, pristine.config.get_text_config().vocab_size), raw.shape
    assert torch.isfinite(raw).all()
    processed_equal = bool(torch.equal(raw, proc))
    assert processed_equal, "a logits processor changed the scores (max %g)" % float(
        (raw - proc).abs().max())
    assert raw.argmax(-1).tolist() == gen, "a generated token is not the argmax of its logits"
    top2 = torch.topk(raw, 2, dim=-1).values
    margins = (top2[:, 0] - top2[:, 1]).tolist()

    # one uncached forward over prompt + generated[:-1], on a fresh copy
    f = copy.deepcopy(pristine)
    with torch.no_grad():
        full = f(torch.tensor([list(prompt) + gen[:-1]], dtype=torch.long)).logits[0]
    full = full[len(prompt) - 1:].to(torch.float32)
    tf_diff = float((full - raw).abs().max())
    tf_argmax_same = int((full.argmax(-1) == raw.argmax(-1)).sum())
    return gen, margins, tf_diff, tf_argmax_same


def check_logits_npy(pristine, folder):
    ids = np.load(os.path.join(folder, "ids.npy"))
    gold = np.load(os.path.join(folder, "logits.npy"))
    m = copy.deepcopy(pristine)
    with torch.no_grad():
        lg = m(torch.tensor(ids, dtype=torch.long)[None]).logits[0].to(torch.float32).numpy()
    d = float(np.abs(lg - gold).max())
    assert d <= 1e-5, "the loaded model does not reproduce logits.npy (max diff %g)" % d
    return d


def fmt_margin(x):
    return float("%.6g" % x)


def make(name, folder):
    from tokenizers import Tokenizer
    cfg = load_json(os.path.join(folder, "config.json"))
    meta = load_json(os.path.join(folder, "meta.json"))
    fam = FAMILY_OF[cfg["model_type"]]
    cls = getattr(transformers, cfg["architectures"][0])
    pristine = load_model(cls, folder)
    logits_check = check_logits_npy(pristine, folder)
    rust = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(folder)
    vocab = pristine.config.get_text_config().vocab_size
    assert rust.get_vocab_size(with_added_tokens=True) == vocab
    hf_len = len(hf)
    if hf_len != vocab:
        WARN.append("%s: len(AutoTokenizer) = %d, not %d" % (name, hf_len, vocab))
    with open(os.path.join(folder, "tokenizer.json"), "rb") as fh:
        tok_sha = hashlib.sha256(fh.read()).hexdigest()

    prompts = []
    for pname, lo, hi in TEXT_TARGETS:
        t = text_prompt(rust, lo, hi)
        prompts.append(dict(name=pname, kind="text", text=t, add_special_tokens=True,
                            prompt_ids=rust.encode(t, add_special_tokens=True).ids))
    rng = np.random.default_rng(int(meta["seed"]) + 1)
    ids12 = [int(i) for i in rng.integers(0, vocab, size=12)]
    prompts.append(dict(name="ids_1", kind="ids", prompt_ids=ids12[:1]))
    prompts.append(dict(name="ids_12", kind="ids", prompt_ids=ids12))
    for pname, msgs in CHATS:
        kwargs = {"date_string": DATE}
        if fam == "qwen3" and pname == "chat_multi":
            kwargs["enable_thinking"] = False
        note = None
        try:
            rendered = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                              **kwargs)
        except Exception as e:
            if msgs[0]["role"] != "system":
                raise
            note = "the template refuses the system message (%s: %s); rendered without it" % (
                type(e).__name__, e)
            msgs = msgs[1:]
            rendered = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                              **kwargs)
        assert isinstance(rendered, str), type(rendered)
        if len(rust.encode(rendered, add_special_tokens=False).ids) + MAX_NEW > CONTEXT:
            note = ((note + "; ") if note else "") + (
                "the whole conversation does not fit %d tokens with 24 new ones: only its last "
                "message is rendered" % CONTEXT)
            msgs = msgs[-1:]
            rendered = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                              **kwargs)
        p = dict(name=pname, kind="chat", messages=msgs, kwargs=kwargs, rendered=rendered,
                 add_special_tokens=False,
                 prompt_ids=rust.encode(rendered, add_special_tokens=False).ids)
        if note:
            p["note"] = note
        prompts.append(p)

    n_small = 0
    min_margin = float("inf")
    hf_mismatch = 0
    for p in prompts:
        ids = p["prompt_ids"]
        assert len(ids) + MAX_NEW <= CONTEXT, "%s/%s: %d prompt tokens" % (name, p["name"], len(ids))
        if p["kind"] != "ids":
            src = p["text"] if p["kind"] == "text" else p["rendered"]
            hf_ids = hf.encode(src, add_special_tokens=p["add_special_tokens"])
            if list(hf_ids) != list(ids):
                hf_mismatch += 1
                p["hf_prompt_ids"] = list(hf_ids)
                WARN.append("%s/%s: transformers encodes the prompt differently" % (name, p["name"]))
        gen, margins, tf_diff, tf_same = greedy(pristine, ids)
        p["generated"] = gen
        p["margins"] = [fmt_margin(x) for x in margins]
        p["small_margin_steps"] = [i for i, x in enumerate(margins) if x < MARGIN_TOL]
        p["teacher_forced_max_abs_diff"] = float("%.3g" % tf_diff)
        p["teacher_forced_argmax_same"] = tf_same
        p["text_out"] = rust.decode(gen, skip_special_tokens=False)
        p["text_out_skip"] = rust.decode(gen, skip_special_tokens=True)
        hd = hf.decode(gen, skip_special_tokens=False)
        hs = hf.decode(gen, skip_special_tokens=True)
        if hd != p["text_out"] or hs != p["text_out_skip"]:
            p["hf_decode"] = dict(text_out=hd, text_out_skip=hs)
        n_small += len(p["small_margin_steps"])
        min_margin = min(min_margin, min(margins))
        print("  %-12s prompt %3d tokens  min margin %.3g  small %d  tf diff %.2g (%d/24 same)" % (
            p["name"], len(ids), min(margins), len(p["small_margin_steps"]), tf_diff, tf_same))

    head = dict(
        fixture=name,
        generated_by="tests/ref/make_gen_goldens.py",
        versions=dict(torch=torch.__version__, transformers=transformers.__version__,
                      tokenizers=__import__("tokenizers").__version__),
        architecture=cfg["architectures"][0],
        tokenizer=dict(family=fam, tokenizer_json_sha256=tok_sha,
                       made_by="tests/ref/make_fixture_tokenizers.py"),
        method=("transformers generate(do_sample=False, num_beams=1, max_new_tokens=24), "
                "eos/pad/bos None in the passed GenerationConfig and in model.generation_config; "
                "float32 CPU, eager attention, bf16 weights as stored; a fresh model copy per "
                "prompt; checked: 24 tokens, scores == raw logits, tokens == argmax"),
        logits_npy_reproduced_max_abs_diff=logits_check,
        max_new_tokens=MAX_NEW, context_len=CONTEXT, margin_tolerance=MARGIN_TOL,
        n_steps=MAX_NEW * len(prompts), n_small_margin_steps=n_small,
        min_margin=fmt_margin(min_margin),
        hf_prompt_mismatches=hf_mismatch, hf_tokenizer_len=hf_len,
    )
    body = json.dumps(head, ensure_ascii=False, indent=1)
    assert body.endswith("}")
    lines = [json.dumps(p, ensure_ascii=False, separators=(",", ":")) for p in prompts]
    body = body[:-1].rstrip() + ',\n "prompts": [\n' + ",\n".join(lines) + "\n ]\n}\n"
    json.loads(body)
    with open(os.path.join(folder, "generate.json"), "w", encoding="utf-8") as f:
        f.write(body)
    return n_small, len(prompts) * MAX_NEW, min_margin


def main():
    global np, torch, transformers
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixtures", default=FIXTURES)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    import numpy
    import torch as _torch
    import transformers as _tr
    np, torch, transformers = numpy, _torch, _tr
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    print("torch %s, transformers %s" % (torch.__version__, transformers.__version__))
    only = set(filter(None, a.only.split(",")))
    names = sorted(n for n in os.listdir(a.fixtures)
                   if os.path.exists(os.path.join(a.fixtures, n, "tokenizer.json"))
                   and (not only or n in only))
    failed, total_small, total_steps = [], 0, 0
    for n in names:
        t0 = time.time()
        print("=== %s" % n, flush=True)
        try:
            s, steps, mm = make(n, os.path.join(a.fixtures, n))
            total_small += s
            total_steps += steps
            print("=== %s: %d/%d steps with margin < %g, min margin %.3g (%.1fs)" % (
                n, s, steps, MARGIN_TOL, mm, time.time() - t0), flush=True)
        except Exception:
            traceback.print_exc()
            failed.append(n)
    print("\nsummary: %d fixtures, %d steps, %d with margin < %g; failed: %s" % (
        len(names) - len(failed), total_steps, total_small, MARGIN_TOL, failed or "none"))
    for w in WARN:
        print("WARNING " + w)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
