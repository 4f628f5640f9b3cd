#!/usr/bin/env python3
"""LoRA references (tests/fixtures/lora/<case>/) from PEFT and transformers.

How to run (on the GPU machine of the `device` tool: its python3 has torch, transformers and peft;
everything here runs on the CPU in float32; nothing is downloaded):

    python3 tests/ref/make_lora_fixtures.py [--only case,case] [--out tests/fixtures/lora]
    python3 tests/ref/make_lora_fixtures.py --bf16      # then adamw_bf16 (needs cuda)
    python3 tests/ref/make_lora_fixtures.py --gentle    # then adamw_gentle(_bf16) (cuda)

Model: the fixture's transformers class, from_pretrained(folder, dtype=float32,
attn_implementation="eager") (the stored bf16 weights in float32, as make_fixtures.py computes
logits.npy).  Adapter: peft.LoraConfig(r, lora_alpha, target_modules, layers_to_transform,
lora_dropout=0, init_lora_weights=False) after torch.manual_seed(case seed): with
init_lora_weights=False PEFT leaves both A and B as nn.Linear initialises them (random, so no
gradient is trivially zero).  The initial adapter is saved with save_pretrained (PEFT's own files:
adapter_model.safetensors, adapter_config.json).

Batch (batch.json): B sequences of random ids (numpy default_rng(seed)) of different lengths,
right-padded to the longest with id 0, attention_mask 1 on the real tokens; prompt_lens[b] the
prompt part of each.  Labels: the ids, -100 on padding ("unmasked") and also on the prompt
("masked"); transformers shifts them (position t predicts token t + 1).  The loss is the sum of
the per-token cross-entropies over every unmasked target of the batch divided by their count:
transformers' mean over labels != -100 (checked here against that sum / count).

Recorded (expected.json, grads.safetensors):
  loss_unmasked, loss_masked: the loss of the initial adapter;
  grads.safetensors: every lora_A / lora_B gradient of the initial adapter, PEFT's tensor names
      prefixed "unmasked." or "masked.";
  adamw: ten optimizer steps on the masked loss from the initial adapter: torch.optim.AdamW(lr,
      betas, eps, weight_decay) on the LoRA parameters, each step zero_grad, loss, backward,
      clip_grad_norm_(max_norm), step, with the learning rate of a schedule set before the step
      (constant, or transformers' get_cosine_schedule_with_warmup); "losses" the loss at each
      step (before its update), "lrs" the learning rate each step used.
  adamw_bf16 (--bf16, on the GPU, into an existing case folder): the same ten steps from the same
      initial adapter (the folder's adapter files, PeftModel.from_pretrained(is_trainable=True)) and
      batch (batch.json), with the model in bfloat16 on cuda (sdpa attention; PEFT keeps the
      adapter's parameters in float32, its default autocast_adapter_dtype), the loss from the
      logits in float32: the reference of the GPU's reduced precision; "losses" as above.
  adamw_gentle, adamw_gentle_bf16 (--gentle, into an existing case folder; the second needs
      cuda): adamw and adamw_bf16 again from the folder's adapter files, at a tenth of the
      learning rate (GENTLE_LR).  At OPT's lr two cases are chaotic in bf16 (llama_all's loss falls
      a hundredfold in ten steps, gemma2's softcaps saturate): PEFT's own bf16 and float32 runs
      part by 2e-2 to 3e-2 there, so no bf16 computation can be held to 1e-2 of either; at
      GENTLE_LR they part by less, and the GPU's ten steps are held to 1e-2 of adamw_gentle_bf16.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
import transformers
import peft
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = [
    # name, fixture, rank, alpha, targets, layers (None: all), lens, prompt lens, schedule, seed
    dict(name="llama_all", fixture="llama_tied_bias", r=4, alpha=8, targets=ALL, layers=None,
         lens=[11, 7, 16], prompt=[4, 3, 6], schedule="constant", seed=1),
    dict(name="qwen3_qv_last", fixture="qwen3_headdim", r=8, alpha=16, targets=["q_proj", "v_proj"],
         layers=[-1], lens=[9, 14], prompt=[2, 5], schedule="cosine", seed=2),
    dict(name="gemma3_all", fixture="gemma3_text_sliding", r=4, alpha=4, targets=ALL, layers=None,
         lens=[13, 20, 5], prompt=[3, 8, 2], schedule="cosine", seed=3),
    dict(name="gemma2_attn_down", fixture="gemma2_softcap", r=2, alpha=6,
         targets=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"], layers=None,
         lens=[12, 6], prompt=[5, 2], schedule="constant", seed=4),
    # dynamic RoPE past max_position_embeddings 32: transformers scales the batch for its padded
    # length, 40
    dict(name="llama_dynamic_long", fixture="llama_dynamic", r=4, alpha=8,
         targets=["q_proj", "k_proj", "v_proj", "gate_proj"], layers=None,
         lens=[40, 33], prompt=[6, 9], schedule="cosine", seed=5),
]

OPT = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, max_norm=1.0, steps=10, warmup=3)
GENTLE_LR = 1e-3


def load(fixture, dtype=torch.float32, attn="eager"):
    path = os.path.join(ROOT, fixture)
    cfg = transformers.AutoConfig.from_pretrained(path)
    cls = getattr(transformers, cfg.architectures[0])
    m = cls.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    m.eval()  # no dropout anywhere
    return m


def make_batch(case, vocab):
    rng = np.random.default_rng(case["seed"])
    T = max(case["lens"])
    ids = np.zeros((len(case["lens"]), T), dtype=np.int64)
    att = np.zeros_like(ids)
    for b, n in enumerate(case["lens"]):
        ids[b, :n] = rng.integers(3, vocab, size=n)
        att[b, :n] = 1
    return torch.tensor(ids), torch.tensor(att)


def labels_for(ids, att, prompt, masked):
    lab = ids.clone()
    lab[att == 0] = -100
    if masked:
        for b, p in enumerate(prompt):
            lab[b, :p] = -100
    return lab


def mean_nll(logits, lab):
    """The sum of the cross-entropies over unmasked targets / their count."""
    tgt = lab[:, 1:]
    lp = torch.log_softmax(logits.float()[:, :-1], dim=-1)
    keep = tgt != -100
    nll = -lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum()


def loss_of(model, ids, att, lab):
    # computed here and checked against transformers' own loss
    loss = mean_nll(model(input_ids=ids, attention_mask=att).logits, lab)
    hf = model(input_ids=ids, attention_mask=att, labels=lab).loss
    assert abs(hf.item() - loss.item()) <= 1e-5 * max(1.0, abs(loss.item())), (hf.item(), loss.item())
    return loss


def lora_params(model):
    return [(n, p) for n, p in model.named_parameters() if "lora_" in n]


def adamw_steps(case, model, loss_fn, lr=OPT["lr"]):
    """OPT's steps on the LoRA parameters: each zero_grad, loss_fn(), backward,
    clipping, step, with the case's schedule; the losses and learning rates."""
    params = [p for _, p in lora_params(model)]
    opt = torch.optim.AdamW(params, lr=lr, betas=OPT["betas"], eps=OPT["eps"],
                            weight_decay=OPT["weight_decay"])
    if case["schedule"] == "cosine":
        sched = transformers.get_cosine_schedule_with_warmup(opt, OPT["warmup"], OPT["steps"])
    else:
        sched = transformers.get_constant_schedule(opt)
    losses, lrs = [], []
    for _ in range(OPT["steps"]):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, OPT["max_norm"])
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses, lrs


def run(case, out_root):
    base = load(case["fixture"])
    n_layers = base.config.num_hidden_layers
    layers = list(range(n_layers)) if case["layers"] is None else [n_layers + i if i < 0 else i for i in case["layers"]]
    torch.manual_seed(case["seed"])
    cfg = peft.LoraConfig(r=case["r"], lora_alpha=case["alpha"], target_modules=case["targets"],
                          layers_to_transform=layers, lora_dropout=0.0, init_lora_weights=False, bias="none")
    model = peft.get_peft_model(base, cfg)
    model.eval()
    out = os.path.join(out_root, case["name"])
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    model.save_pretrained(out)
    os.remove(os.path.join(out, "README.md"))  # PEFT's model-card template
    init = {n: p.detach().clone() for n, p in lora_params(model)}

    ids, att = make_batch(case, base.config.vocab_size)
    batch = {"ids": ids.tolist(), "lens": case["lens"], "prompt_lens": case["prompt"]}
    with open(os.path.join(out, "batch.json"), "w") as f:
        json.dump(batch, f)

    exp = {"case": case["name"], "fixture": case["fixture"], "r": case["r"], "alpha": case["alpha"],
           "targets": case["targets"], "layers": layers,
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "peft": peft.__version__}}
    grads = {}
    for masked in (False, True):
        key = "masked" if masked else "unmasked"
        model.zero_grad()
        loss = loss_of(model, ids, att, labels_for(ids, att, case["prompt"], masked))
        loss.backward()
        exp["loss_" + key] = loss.item()
        exp["tokens_" + key] = int((labels_for(ids, att, case["prompt"], masked)[:, 1:] != -100).sum())
        for n, p in lora_params(model):
            name = n.replace(".default", "")
            grads[key + "." + name] = p.grad.detach().clone().contiguous()
    save_file(grads, os.path.join(out, "grads.safetensors"))

    with torch.no_grad():
        for n, p in lora_params(model):
            p.copy_(init[n])
    lab = labels_for(ids, att, case["prompt"], True)
    losses, lrs = adamw_steps(case, model, lambda: loss_of(model, ids, att, lab))
    exp["adamw"] = {"lr": OPT["lr"], "betas": list(OPT["betas"]), "eps": OPT["eps"],
                    "weight_decay": OPT["weight_decay"], "max_norm": OPT["max_norm"], "steps": OPT["steps"],
                    "schedule": case["schedule"], "warmup": OPT["warmup"], "masked": True,
                    "losses": losses, "lrs": lrs}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    print(case["name"], "loss", exp["loss_unmasked"], exp["loss_masked"], "adamw", losses[0], "->", losses[-1])


def saved_steps(case, out, bf16, lr):
    """Ten steps from the folder's adapter and batch: the model in float32 on
    the CPU (eager), or in bf16 on cuda (sdpa); the losses and lrs."""
    if bf16:
        base = load(case["fixture"], torch.bfloat16, "sdpa").to("cuda")
    else:
        base = load(case["fixture"])
    dev = "cuda" if bf16 else "cpu"
    model = peft.PeftModel.from_pretrained(base, out, is_trainable=True)
    model.eval()
    with open(os.path.join(out, "batch.json")) as f:
        batch = json.load(f)
    ids = torch.tensor(batch["ids"])
    att = torch.zeros_like(ids)
    for b, n in enumerate(batch["lens"]):
        att[b, :n] = 1
    lab = labels_for(ids, att, batch["prompt_lens"], True).to(dev)
    ids, att = ids.to(dev), att.to(dev)
    assert all(p.dtype == torch.float32 for _, p in lora_params(model))
    return adamw_steps(case, model, lambda: mean_nll(model(input_ids=ids, attention_mask=att).logits, lab), lr)


def gpu_record(losses):
    return {"losses": losses, "device": torch.cuda.get_device_name(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__}}


def update_expected(out, fn):
    with open(os.path.join(out, "expected.json")) as f:
        exp = json.load(f)
    fn(exp)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1)
    return exp


def run_bf16(case, out_root):
    out = os.path.join(out_root, case["name"])
    losses, _ = saved_steps(case, out, True, OPT["lr"])
    exp = update_expected(out, lambda e: e.update(adamw_bf16=gpu_record(losses)))
    print(case["name"], "bf16 adamw", losses[0], "->", losses[-1], "(float32:", exp["adamw"]["losses"][-1], ")")


def run_gentle(case, out_root):
    out = os.path.join(out_root, case["name"])
    losses, lrs = saved_steps(case, out, False, GENTLE_LR)

    def put(e):
        e["adamw_gentle"] = dict(e["adamw"], lr=GENTLE_LR, losses=losses, lrs=lrs)
    update_expected(out, put)
    print(case["name"], "gentle adamw", losses[0], "->", losses[-1])
    if torch.cuda.is_available():
        lb, _ = saved_steps(case, out, True, GENTLE_LR)
        update_expected(out, lambda e: e.update(adamw_gentle_bf16=gpu_record(lb)))
        spread = max(abs(x - y) / max(abs(y), 1.0) for x, y in zip(losses, lb))
        print(case["name"], "gentle bf16 adamw", lb[0], "->", lb[-1], "spread %.2e" % spread)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default=os.path.join(ROOT, "lora"))
    ap.add_argument("--bf16", action="store_true", help="only add adamw_bf16 to existing cases (GPU)")
    ap.add_argument("--gentle", action="store_true",
                    help="only add adamw_gentle (and, with cuda, adamw_gentle_bf16) to existing cases")
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    only = set(filter(None, a.only.split(",")))
    for case in CASES:
        if not only or case["name"] in only:
            if a.gentle:
                run_gentle(case, a.out)
            elif a.bf16:
                run_bf16(case, a.out)
            else:
                run(case, a.out)


if __name__ == "__main__":
    main()
