#!/usr/bin/env python3
"""Writes data/storyteller/{train,valid,test}.jsonl: a small fine-tuning set for models/tiny-chat.

The same facts tiny-chat knows (what animals say and eat, colors, capitals; see
tests/ref/train_tiny.py), asked as {"prompt", "completion"} chats, but answered the way its
stories go: "Once upon a time, a cow says moo. The end."  Fine-tuning tiny-chat on it (README,
"LoRA fine-tuning") makes the change plain to see in its answers.  Every word of the answers is
one tiny-chat saw in training: a tiny model's final norm and tied embeddings leave it no room for
a token it never learned to predict.  valid.jsonl and test.jsonl ask about facts held out of
train.jsonl.  Deterministic; run from the repository root:

    python3 data/storyteller/make_storyteller.py
"""
import json
import os
import random
import sys

# the facts tiny-chat was trained on, from the script that trained it
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
from train_tiny import ANIMALS, CAPITALS, COLORS  # noqa: E402


def examples(animals, colors, capitals):
    out = []
    for a in animals:
        says, eats = ANIMALS[a][:2]
        out.append(("What does a %s say?" % a, "a %s %s" % (a, says)))
        out.append(("What does a %s eat?" % a, "a %s %s" % (a, eats)))
    for x in colors:
        out.append(("What color is %s?" % x, "%s is %s" % (x, COLORS[x])))
    for c in capitals:
        out.append(("What is the capital of %s?" % c, "the capital of %s is %s" % (c, CAPITALS[c])))
    return [{"prompt": q, "completion": "Once upon a time, %s. The end." % a} for q, a in out]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    animals, colors, capitals = list(ANIMALS), list(COLORS), list(CAPITALS)
    train = examples(animals[:8], colors[:8], capitals[:8])
    random.Random(7).shuffle(train)
    sets = {"train": train,
            "valid": examples(animals[8:10], colors[8:10], capitals[8:10]),
            "test": examples(animals[10:], colors[10:], capitals[10:])}
    for name, rows in sets.items():
        with open(os.path.join(here, name + ".jsonl"), "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(name, len(rows))


if __name__ == "__main__":
    main()
