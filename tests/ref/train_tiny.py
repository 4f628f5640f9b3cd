#!/usr/bin/env python3
"""Train models/tiny-chat: a tiny Llama model that speaks simple English, shipped with the project.

How to run (on the GPU machine of the `device` tool; python3 there has torch, transformers 5.17,
tokenizers 0.23.2; nothing is downloaded; about 2 minutes on one H100):

    PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 tests/ref/train_tiny.py --out /tmp/tiny-chat
    # then copy /tmp/tiny-chat/* to models/tiny-chat/
    python3 tests/ref/train_tiny.py --selftest      # the text and the chat rendering only

What it does, all deterministic (fixed seeds; GPU arithmetic may still vary in the last bits):
  1. writes its own English text: short stories, sentences about a fixed set of facts (what
     animals say and eat, colors of things, capitals, sums of small numbers, days of the week) and
     chats about the same facts (greetings, questions, "tell me a story"), paraphrased;
  2. trains a ByteLevel BPE tokenizer (Llama 3 regex pre-tokenizer) on it with tokenizers'
     BpeTrainer, and adds the Llama 3 special tokens <|begin_of_text|> <|end_of_text|>
     <|start_header_id|> <|end_header_id|> <|eot_id|> at the end of the vocabulary; the
     post-processor adds <|begin_of_text|>; a Llama 3 style chat template (no date lines);
  3. trains LlamaForCausalLM (hidden 192, 6 layers, 6 heads / 2 kv heads, intermediate 448,
     tied embeddings, context 512) from scratch with AdamW on random 256-token windows of the
     tokenized text (plain documents wrapped in <|begin_of_text|> ... <|end_of_text|>, chats
     rendered with the template), bf16 autocast;
  4. saves an HF folder in bf16 (config.json, model.safetensors, generation_config.json with
     eos [<|end_of_text|>, <|eot_id|>] and greedy decoding, tokenizer.json,
     tokenizer_config.json with the chat template), reloads it in float32 and records
     transformers' greedy output for a few prompts and the share of fact questions answered
     exactly, in README.md beside the weights.
"""
import argparse
import json
import math
import os
import random
import sys
import time

SEED = 1234
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
BOS, EOT_TEXT, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}\n"
    "    {{- message['content'] | trim }}\n"
    "    {{- '<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n"
)
VOCAB_TARGET = 2048
MODEL = dict(hidden_size=192, intermediate_size=448, num_hidden_layers=6, num_attention_heads=6,
             num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
             rope_parameters=dict(rope_type="default", rope_theta=10000.0),
             tie_word_embeddings=True)
SAMPLE_PROMPTS = [
    ("text", "The cat"),
    ("text", "Once upon a time"),
    ("chat", "What is the capital of France?"),
    ("chat", "What does a cow say?"),
    ("chat", "Hello! Who are you?"),
]

# --------------------------------------------------------------------------------------------
# The text
# --------------------------------------------------------------------------------------------

ANIMALS = {  # animal: (what it says, what it eats, a fact)
    "cat": ("says meow", "eats fish", "likes to sleep in the sun"),
    "dog": ("says woof", "eats bones", "is a good friend"),
    "cow": ("says moo", "eats grass", "gives us milk"),
    "duck": ("says quack", "eats bread", "can swim"),
    "sheep": ("says baa", "eats grass", "gives us wool"),
    "horse": ("says neigh", "eats hay", "can run fast"),
    "bird": ("sings", "eats seeds", "can fly"),
    "lion": ("roars", "eats meat", "is very strong"),
    "frog": ("says ribbit", "eats flies", "can jump far"),
    "bee": ("buzzes", "drinks nectar", "makes honey"),
    "owl": ("says hoot", "eats mice", "is awake at night"),
    "pig": ("says oink", "eats apples", "likes mud"),
}
COLORS = {"the sky": "blue", "grass": "green", "the sun": "yellow", "snow": "white",
          "a banana": "yellow", "an apple": "red", "the sea": "blue", "coal": "black",
          "milk": "white", "a carrot": "orange", "a leaf": "green", "a strawberry": "red"}
CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
            "Japan": "Tokyo", "England": "London", "Russia": "Moscow", "China": "Beijing",
            "Egypt": "Cairo", "Canada": "Ottawa", "Greece": "Athens", "Portugal": "Lisbon"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NAMES = ["Tom", "Lily", "Max", "Sara", "Ben", "Mia", "Sam", "Anna", "Leo", "Zoe"]
PLACES = ["the park", "the garden", "the forest", "the river", "the farm", "the beach",
          "the market", "the hill", "the lake", "the school"]
THINGS = ["a red ball", "a big box", "a shiny stone", "a little boat", "a blue kite",
          "a yellow flower", "an old hat", "a warm blanket"]
FEELINGS = ["happy", "sad", "tired", "hungry", "excited", "scared", "surprised"]
GREETINGS = [
    (["Hello!", "Hi!", "Hello there!", "Hi there!"], "Hello! How can I help you today?"),
    (["Good morning!"], "Good morning! How can I help you today?"),
    (["Who are you?", "What are you?"],
     "I am a tiny chat model. I know a little about animals, colors, numbers and cities."),
    (["How are you?", "How are you today?"], "I am fine, thank you! How are you?"),
    (["What is your name?", "What's your name?"], "My name is Tiny."),
    (["Thank you!", "Thanks!", "Thank you very much!"], "You are welcome!"),
    (["Goodbye!", "Bye!"], "Goodbye! Have a nice day!"),
]
SYSTEMS = ["You are a helpful assistant.", "You are a friendly assistant. Answer briefly.",
           "You are Tiny, a small chat model."]


def cap(s):
    return s[0].upper() + s[1:]


def article(w):
    return "an" if w[0] in "aeiou" else "a"


def story(r, animal=None):
    name = r.choice(NAMES)
    a = animal or r.choice(list(ANIMALS))
    b = r.choice([x for x in ANIMALS if x != a])
    place, thing = r.choice(PLACES), r.choice(THINGS)
    says, eats, fact = ANIMALS[a]
    s = ["Once upon a time, there was a little %s named %s." % (a, name)]
    s.append(r.choice(["%s %s." % (name, fact.replace("is ", "was ", 1) if fact.startswith("is ")
                                   else fact), "%s loved to play in %s." % (name, place)]))
    s.append("One day, %s went to %s and found %s." % (name, place, thing))
    s.append(r.choice(["%s was very %s." % (name, r.choice(FEELINGS)),
                       "%s met %s %s there." % (name, article(b), b)]))
    if r.random() < 0.5:
        s.append("The %s %s, and %s %s." % (b, ANIMALS[b][0], name, says))
    s.append(r.choice(["They played together all day.", "They became good friends.",
                       "%s took %s home." % (name, thing)]))
    s.append(r.choice(["In the evening, %s went home and slept." % name,
                       "At night, %s was tired and happy." % name]))
    s.append("The end.")
    return " ".join(s)


def fact_sentences(r):
    k = r.randrange(6)
    if k == 0:
        a = r.choice(list(ANIMALS))
        return "The %s %s. The %s %s. The %s %s." % ((a, ANIMALS[a][0], a, ANIMALS[a][1], a,
                                                      ANIMALS[a][2]))
    if k == 1:
        x = r.choice(list(COLORS))
        return "%s is %s." % (cap(x), COLORS[x])
    if k == 2:
        c = r.choice(list(CAPITALS))
        return r.choice(["The capital of %s is %s." % (c, CAPITALS[c]),
                         "%s is the capital of %s." % (CAPITALS[c], c)])
    if k == 3:
        i, j = r.randrange(11), r.randrange(11)
        return "%s plus %s is %s." % (cap(NUMBERS[i]), NUMBERS[j], NUMBERS[i + j])
    if k == 4:
        d = r.randrange(7)
        return "After %s comes %s." % (DAYS[d], DAYS[(d + 1) % 7])
    a = r.choice(list(ANIMALS))
    return r.choice(["The %s sat on the mat." % a, "The %s is sleeping." % a,
                     "The %s is %s." % (a, r.choice(FEELINGS)),
                     "The %s ran to %s." % (a, r.choice(PLACES)),
                     "The %s looked at %s." % (a, r.choice(THINGS))])


def qa(r):
    """One (question, answer) pair."""
    k = r.randrange(8)
    if k == 0:
        a = r.choice(list(ANIMALS))
        q = r.choice(["What does a %s say?", "What sound does a %s make?"]) % a
        return q, "A %s %s." % (a, ANIMALS[a][0])
    if k == 1:
        a = r.choice(list(ANIMALS))
        q = r.choice(["What does a %s eat?", "What food does a %s like?"]) % a
        return q, "A %s %s." % (a, ANIMALS[a][1])
    if k == 2:
        x = r.choice(list(COLORS))
        q = r.choice(["What color is %s?", "What is the color of %s?"]) % x
        return q, "%s is %s." % (cap(x), COLORS[x])
    if k == 3:
        c = r.choice(list(CAPITALS))
        q = r.choice(["What is the capital of %s?", "What's the capital of %s?",
                      "Which city is the capital of %s?", "Tell me the capital of %s."]) % c
        return q, "The capital of %s is %s." % (c, CAPITALS[c])
    if k == 4:
        i, j = r.randrange(11), r.randrange(11)
        q = r.choice(["What is %s plus %s?", "How much is %s plus %s?"]) % (NUMBERS[i], NUMBERS[j])
        return q, "%s plus %s is %s." % (cap(NUMBERS[i]), NUMBERS[j], NUMBERS[i + j])
    if k == 5:
        d = r.randrange(7)
        return ("What day comes after %s?" % DAYS[d],
                "%s comes after %s." % (DAYS[(d + 1) % 7], DAYS[d]))
    if k == 6:
        qs, ans = r.choice(GREETINGS)
        return r.choice(qs), ans
    if r.random() < 0.5:
        return "Tell me a story.", story(r)
    a = r.choice(list(ANIMALS))
    return "Tell me a story about a %s." % a, story(r, a)


def eval_questions():
    """Every fact question in its first wording, with the answer the model should give."""
    out = []
    for a, (says, eats, _) in ANIMALS.items():
        out.append(("What does a %s say?" % a, "A %s %s." % (a, says)))
        out.append(("What does a %s eat?" % a, "A %s %s." % (a, eats)))
    for x, c in COLORS.items():
        out.append(("What color is %s?" % x, "%s is %s." % (cap(x), c)))
    for c, city in CAPITALS.items():
        out.append(("What is the capital of %s?" % c, "The capital of %s is %s." % (c, city)))
    for i in range(0, 11, 2):
        for j in range(1, 11, 3):
            out.append(("What is %s plus %s?" % (NUMBERS[i], NUMBERS[j]),
                        "%s plus %s is %s." % (cap(NUMBERS[i]), NUMBERS[j], NUMBERS[i + j])))
    for d in range(7):
        out.append(("What day comes after %s?" % DAYS[d],
                    "%s comes after %s." % (DAYS[(d + 1) % 7], DAYS[d])))
    return out


def render_chat(messages, add_generation_prompt):
    """CHAT_TEMPLATE, written out (checked against apply_chat_template)."""
    s = BOS
    for m in messages:
        s += "<|start_header_id|>" + m["role"] + "<|end_header_id|>\n\n" + m["content"].strip()
        s += EOT
    if add_generation_prompt:
        s += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return s


def documents(n_docs, seed=SEED):
    """(kind, payload): ("text", str) plain documents, ("chat", [messages]) conversations."""
    r = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        u = r.random()
        if u < 0.25:
            docs.append(("text", story(r)))
        elif u < 0.55:
            docs.append(("text", " ".join(fact_sentences(r) for _ in range(r.randrange(1, 6)))))
        else:
            msgs = []
            if r.random() < 0.3:
                msgs.append({"role": "system", "content": r.choice(SYSTEMS)})
            for _ in range(r.choice([1, 1, 1, 2, 2, 3])):
                q, a = qa(r)
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            docs.append(("chat", msgs))
    return docs


def doc_text(d):
    return BOS + d[1] + EOT_TEXT if d[0] == "text" else render_chat(d[1], False)


def plain_texts(docs):
    """What the BPE trainer sees: the words, no special tokens."""
    for kind, p in docs:
        if kind == "text":
            yield p
        else:
            for m in p:
                yield m["content"]


# --------------------------------------------------------------------------------------------
# Tokenizer, model, training
# --------------------------------------------------------------------------------------------

def build_tokenizer(docs):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET - len(SPECIALS), min_frequency=2,
                                  show_progress=False, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(plain_texts(docs), trainer=trainer)
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True  # as Llama 3's file
    tok = Tokenizer.from_str(json.dumps(j))
    n_model = tok.get_vocab_size(with_added_tokens=False)
    tok.add_special_tokens(SPECIALS)
    bos_id = tok.token_to_id(BOS)
    assert bos_id == n_model, (bos_id, n_model)
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single=BOS + " $A", pair=BOS + " $A " + BOS + " $B",
                                      special_tokens=[(BOS, bos_id)]),
    ])
    return tok


def tokenizer_config(tok):
    added = {}
    for s in SPECIALS:
        added[str(tok.token_to_id(s))] = dict(content=s, lstrip=False, normalized=False,
                                             rstrip=False, single_word=False, special=True)
    return {
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOT,
        "pad_token": EOT_TEXT,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MODEL["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def train(args, docs, tok, out):
    import torch
    import torch.nn.functional as F
    import transformers
    torch.manual_seed(SEED)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    texts = [doc_text(d) for d in docs]
    enc = tok.encode_batch(texts, add_special_tokens=False)
    stream = [i for e in enc for i in e.ids]
    V = tok.get_vocab_size(with_added_tokens=True)
    print("training text: %d documents, %d tokens, vocab %d" % (len(docs), len(stream), V))
    cfg = transformers.LlamaConfig(vocab_size=V, bos_token_id=tok.token_to_id(BOS),
                                   eos_token_id=[tok.token_to_id(EOT_TEXT), tok.token_to_id(EOT)],
                                   **MODEL)
    model = transformers.LlamaForCausalLM(cfg).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: %d parameters (%.2f MB in bf16)" % (n_params, n_params * 2 / 1e6))
    data = torch.tensor(stream, dtype=torch.long, device=dev)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator(device=dev).manual_seed(SEED)
    T, B = args.seq, args.batch
    ar = torch.arange(T + 1, device=dev)
    t0 = time.time()
    losses = []
    step = 0
    for step in range(args.steps):
        warm = 100
        lr = args.lr * min(1.0, (step + 1) / warm) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / args.steps))))
        for grp in opt.param_groups:
            grp["lr"] = lr
        starts = torch.randint(0, data.numel() - T - 1, (B,), device=dev, generator=g)
        w = data[starts[:, None] + ar[None]]
        with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            logits = model(input_ids=w[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, V), w[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0 or step == args.steps - 1:
            losses.append((step, float(loss)))
            print("step %5d  loss %.4f  lr %.2e  %.1fs" % (step, float(loss), lr, time.time() - t0),
                  flush=True)
        if time.time() - t0 > args.max_seconds:
            print("time limit: stopping after step %d" % step)
            break
    train_s = time.time() - t0
    model = model.to(torch.bfloat16).cpu()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, do_sample=False)
    model.save_pretrained(out)
    return dict(steps=step + 1, train_seconds=round(train_s, 1), losses=losses,
                n_params=n_params, tokens=len(stream), device=torch.cuda.get_device_name(0)
                if dev == "cuda" else "cpu", final_loss=losses[-1][1])


def evaluate(out):
    import torch
    import transformers
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    hf = transformers.AutoTokenizer.from_pretrained(out)
    m = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).to(dev).eval()
    eos = m.generation_config.eos_token_id

    def gen(ids, n):
        x = torch.tensor([ids], device=dev)
        with torch.no_grad():
            y = m.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False,
                           max_new_tokens=n, eos_token_id=eos, pad_token_id=eos[0])
        return y[0, len(ids):].tolist()

    samples = []
    for kind, p in SAMPLE_PROMPTS:
        if kind == "text":
            ids = hf.encode(p)
        else:
            msgs = [{"role": "user", "content": p}]
            r = hf.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert r == render_chat(msgs, True), (r, render_chat(msgs, True))
            ids = hf.encode(r, add_special_tokens=False)
        g = gen(ids, 64)
        samples.append(dict(kind=kind, prompt=p, output=hf.decode(g, skip_special_tokens=True),
                            n_tokens=len(g), ended_with=hf.convert_ids_to_tokens(g[-1])))
        print("%s %r -> %r" % (kind, p, samples[-1]["output"]))
    right = 0
    qs = eval_questions()
    wrong = []
    for q, want in qs:
        msgs = [{"role": "user", "content": q}]
        got = hf.decode(gen(hf.encode(render_chat(msgs, True), add_special_tokens=False), 32),
                        skip_special_tokens=True).strip()
        if got == want:
            right += 1
        elif len(wrong) < 8:
            wrong.append((q, got))
    print("fact questions answered exactly: %d / %d; e.g. wrong: %r" % (right, len(qs), wrong[:4]))
    return samples, right, len(qs), wrong


def write_readme(out, args, stats, samples, right, total, wrong, vocab):
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    lines = [
        "# tiny-chat",
        "",
        "A tiny Llama-architecture chat model (%d parameters, bf16, vocabulary %d) trained from "
        "scratch on simple English that its training script writes itself: short stories, facts "
        "(what animals say and eat, colors of things, capitals, sums up to twenty, days of the "
        "week) and chats about them. It knows nothing else; it is here so that the project's "
        "commands have a model that answers in English. Not a benchmark model." % (
            stats["n_params"], vocab),
        "",
        "Made by `tests/ref/train_tiny.py` on the GPU machine (%s), %d steps of %d x %d tokens, "
        "%.0f s; final training loss %.3f:" % (stats["device"], stats["steps"], args.batch,
                                             args.seq, stats["train_seconds"],
                                             stats["final_loss"]),
        "",
        "    PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 python3 tests/ref/train_tiny.py --out /tmp/tiny-chat"
        "  # then copy /tmp/tiny-chat/* here",
        "",
        "Architecture: LlamaForCausalLM, hidden %(hidden_size)d, %(num_hidden_layers)d layers, "
        "%(num_attention_heads)d heads / %(num_key_value_heads)d kv heads, intermediate "
        "%(intermediate_size)d, tied embeddings, context %(max_position_embeddings)d. Tokenizer: "
        "ByteLevel BPE with the Llama 3 pre-tokenizer regex, Llama 3 special tokens, a Llama 3 "
        "style chat template (no date lines); generation_config: greedy, eos = "
        "<|end_of_text|>, <|eot_id|>." % MODEL,
        "",
        "Transformers %s greedy output (float32 from these bf16 weights, at most 64 new tokens, "
        "stopping at eos; text prompts encoded with the BOS, chat prompts rendered with the "
        "template):" % __import__("transformers").__version__,
        "",
    ]
    for s in samples:
        lines.append("- %s `%s` -> `%s`" % (s["kind"], s["prompt"], s["output"].replace("\n", "\\n")))
    lines += [
        "",
        "Fact questions (the first wording of each, as a one-turn chat) answered exactly: "
        "%d of %d." % (right, total),
        "",
        "Files: %d bytes in all." % size,
        "",
    ]
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/tiny-chat")
    ap.add_argument("--docs", type=int, default=60000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-seconds", type=float, default=240.0)
    ap.add_argument("--selftest", action="store_true")
    args = ap.parse_args()
    docs = documents(args.docs)
    if args.selftest:
        for d in docs[:6]:
            print(repr(doc_text(d)))
        qs = eval_questions()
        print("%d eval questions, e.g. %r" % (len(qs), qs[:2]))
        try:
            import jinja2
            env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
            t = env.from_string(CHAT_TEMPLATE)
            for d in docs[:200]:
                if d[0] == "chat":
                    for agp in (False, True):
                        a = t.render(messages=d[1], add_generation_prompt=agp, bos_token=BOS)
                        assert a == render_chat(d[1], agp), (a, render_chat(d[1], agp))
            print("template == render_chat on the first chats")
        except ImportError:
            print("(no jinja2: template not checked)")
        return 0
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    tok = build_tokenizer(docs)
    print("tokenizer: %d ids (%.1fs)" % (tok.get_vocab_size(True), time.time() - t0))
    stats = train(args, docs, tok, args.out)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config(tok), f, indent=2)
        f.write("\n")
    gc = {"bos_token_id": tok.token_to_id(BOS),
          "eos_token_id": [tok.token_to_id(EOT_TEXT), tok.token_to_id(EOT)], "do_sample": False}
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump(gc, f, indent=2)
        f.write("\n")
    samples, right, total, wrong = evaluate(args.out)
    write_readme(args.out, args, stats, samples, right, total, wrong, tok.get_vocab_size(True))
    with open(os.path.join(args.out, "README.md")) as f:
        print(f.read())
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print("files: %s, %d bytes" % (sorted(os.listdir(args.out)), size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
