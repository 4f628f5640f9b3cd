#!/usr/bin/env python3
"""A random cross-check of LoRA training against PEFT, wider than the committed cases
(tests/fixtures/lora): random models of every family (model_fuzz.py's configs; some of them
MLX-quantized, trained as QLoRA against PEFT on the dequantized weights), random adapters (rank,
alpha, target modules, layers) and random batches and optimizer settings; a few AdamW steps by
PEFT in float32 on the CPU and by the library's cpu backend (lora_fuzz_ours.c), compared step by
step: the loss, the gradient's norm before clipping and the learning rate.  Nothing of it is
committed but the programs.

    # here: the library's side, built against the static cpu library
    make CUDA=0 BUILD=build-cpu build-cpu/libinfer.a
    mkdir -p .carry/bin && cc -O2 -Iinclude tests/ref/lora_fuzz_ours.c build-cpu/libinfer.a \\
        -lpcre2-8 -lutf8proc -lcjson -lpthread -lm -o .carry/bin/lora_fuzz_ours
    # device run(carry=[".carry"]), the shared libraries it links in .carry/lib:
    HF_HUB_OFFLINE=1 python3 tests/ref/lora_fuzz.py gen --seed 1 --n 40 --out /tmp/lf
    LD_LIBRARY_PATH=.carry/lib python3 tests/ref/lora_fuzz.py compare --in /tmp/lf \\
        --ours .carry/bin/lora_fuzz_ours

Each case folder N/ holds model/ (the base model), adapter/ (PEFT's save_pretrained of the initial
adapter: init_lora_weights=False, dropout 0) and case.json: the batch (right-padded ids, lengths,
prompt lengths; masked or not), the optimizer (lr, betas, eps, weight decay, clipping, constant or
cosine-with-warmup schedule), how the library splits the batch into micro-batches and whether it
checkpoints (neither changes the mathematics), and PEFT's losses, gradient norms (what
clip_grad_norm_ returns) and learning rates, and the same by PEFT in float64.  compare holds each
step to 1e-4 relative of PEFT's float32 run, and reports a case as ill-conditioned instead where
PEFT's own float32 and float64 runs part by more than that (with the first step's gaps, which no
update has amplified yet).
"""
import argparse
import copy
import json
import math
import os
import random
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peft_steps(model, ids, att, lab, o):
    """o's AdamW steps on the LoRA parameters, as make_lora_fixtures.py's adamw_steps; the losses,
    the gradient norms before clipping and the learning rates."""
    import torch
    import transformers
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                            weight_decay=o["weight_decay"])
    if o["schedule"] == "cosine":
        sched = transformers.get_cosine_schedule_with_warmup(opt, o["warmup"], o["steps"])
    else:
        sched = transformers.get_constant_schedule(opt)
    losses, norms, lrs = [], [], []
    for _ in range(o["steps"]):
        opt.zero_grad()
        logits = model(input_ids=ids, attention_mask=att).logits
        if logits.dtype != torch.float64:
            logits = logits.float()
        tgt = lab[:, 1:]
        keep = tgt != -100
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        loss = (nll * keep).sum() / keep.sum()
        loss.backward()
        if o["max_norm"] > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, o["max_norm"])
        else:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(loss.item())
        norms.append(float(norm))
    return losses, norms, lrs


def gen(a):
    import torch
    import peft
    sys.path.insert(0, HERE)
    import model_fuzz
    torch.use_deterministic_algorithms(True)
    r = random.Random(a.seed)
    os.makedirs(a.out, exist_ok=True)
    made = 0
    while made < a.n:
        d = os.path.join(a.out, str(made))
        shutil.rmtree(d, ignore_errors=True)
        got = model_fuzz.random_model(r, os.path.join(d, "model"), mlx=r.random() < 0.3)
        if got is None:
            continue
        base, cls_name, c, case = got
        L = c["num_hidden_layers"]
        targets = sorted(r.sample(ALL, r.randint(1, len(ALL))))
        layers = sorted(r.sample(range(L), r.randint(1, L)))
        rank = r.choice([1, 2, 4, 8, 16])
        alpha = r.choice([1, 2, 8, 16, 32])
        torch.manual_seed(r.randint(0, 2**31 - 1))
        cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, layers_to_transform=layers,
                              lora_dropout=0.0, init_lora_weights=False, bias="none")
        model = peft.get_peft_model(base, cfg)
        model.eval()
        model.save_pretrained(os.path.join(d, "adapter"))
        readme = os.path.join(d, "adapter", "README.md")
        if os.path.exists(readme):
            os.remove(readme)
        B = r.randint(1, 4)
        lens = [r.randint(2, 30) for _ in range(B)]
        masked = r.random() < 0.6
        prompt = [r.randint(1, n - 1) if masked else 0 for n in lens]
        T = max(lens)
        ids = torch.zeros((B, T), dtype=torch.long)
        att = torch.zeros_like(ids)
        for b, n in enumerate(lens):
            ids[b, :n] = torch.tensor([r.randint(0, c["vocab_size"] - 1) for _ in range(n)])
            att[b, :n] = 1
        lab = ids.clone()
        lab[att == 0] = -100
        for b, p in enumerate(prompt):
            lab[b, :p] = -100
        if int((lab[:, 1:] != -100).sum()) == 0:
            continue  # nothing to learn: draw again
        o = dict(lr=r.choice([1e-4, 1e-3, 3e-3]), betas=[0.9, r.choice([0.999, 0.99])], eps=1e-8,
                 weight_decay=r.choice([0.0, 0.01, 0.1]), max_norm=r.choice([0.0, 0.5, 1.0, 10.0]),
                 schedule=r.choice(["constant", "cosine"]), warmup=r.randint(0, 2), steps=4)
        model64 = copy.deepcopy(model).double()
        losses, norms, lrs = peft_steps(model, ids, att, lab, o)
        if not all(math.isfinite(x) for x in losses + norms):
            continue
        l64, n64, _ = peft_steps(model64, ids, att, lab, o)
        f64 = dict(losses=l64, grad_norms=n64, lrs=lrs) if all(map(math.isfinite, l64 + n64)) else None
        # micro-batches of their own length would each get their own dynamic RoPE scaling
        dynamic = c.get("rope_parameters", {}).get("rope_type") == "dynamic"
        case.update(lora=dict(r=rank, alpha=alpha, targets=targets, layers=layers),
                    batch=dict(ids=ids.tolist(), lens=lens, prompt_lens=prompt, masked=masked),
                    opt=o, micro=r.choice([1, 1, 2]) if B > 1 and not dynamic else 1, checkpoint=r.random() < 0.3,
                    peft=dict(losses=losses, grad_norms=norms, lrs=lrs, version=peft.__version__),
                    peft_f64=f64)
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(case, f, indent=1)
        print(made, cls_name, case["dtype"], "q" if "quantization" in case else "-", "r", rank, targets, layers,
              "loss %.4f -> %.4f" % (losses[0], losses[-1]), flush=True)
        made += 1


def compare(a):
    cases = sorted(int(x) for x in os.listdir(a.inp) if x.isdigit() and
                   os.path.exists(os.path.join(a.inp, x, "case.json")))
    bad = illc = 0
    for i in cases:
        d = os.path.join(a.inp, str(i))
        case = json.load(open(os.path.join(d, "case.json")))
        p = subprocess.run([a.ours, d], capture_output=True, text=True)
        desc = "%3d %-18s %-8s %s r %2d %-40s" % (i, case["arch"], case["dtype"],
                                                 "mlx" if "quantization" in case else "   ", case["lora"]["r"],
                                                 ",".join(t[:-5] for t in case["lora"]["targets"]))
        if p.returncode:
            print(desc, "FAILED:", p.stderr.strip()[:300])
            bad += 1
            continue
        ours = json.loads(p.stdout)
        ref, ref64 = case["peft"], case["peft_f64"]
        worst = gap(ours, ref)
        spread, worst64 = (gap(ref, ref64), gap(ours, ref64)) if ref64 else (0.0, math.inf)
        ok = worst <= 1e-4 and len(ours["losses"]) == len(ref["losses"])
        # where PEFT's own float32 and float64 runs part by more than 1e-4 the
        # case amplifies rounding (large LoRA scales, steps that jump the
        # gradient tenfold) and no float32 computation can be held to 1e-4 of
        # either: ill-conditioned, reported with both gaps, not counted
        ill = not ok and spread > 1e-4
        bad += not ok and not ill
        illc += ill
        print(desc, "loss %.4f -> %.4f: worst step %.1e%s" %
              (ref["losses"][0], ref["losses"][-1], worst,
               "" if ok else "  ill-conditioned: PEFT float32 vs float64 %.1e, ours vs float64 %.1e; first step: %s" %
               (spread, worst64, first_step(ours, ref, ref64))
               if ill else "  <-- PEFT float32 vs float64 %.1e, ours vs float64 %.1e: %s" %
               (spread, worst64, json.dumps(ours)[:300])))
    print("cases:", len(cases), "failed:", bad, "ill-conditioned:", illc)
    return 1 if bad else 0


def first_step(ours, ref, ref64):
    """The first step's loss and gradient norm: ours and PEFT's float32 run against float64."""
    if not ref64:
        return "no float64 run"
    rel = lambda x, y: abs(x - y) / max(abs(y), 1e-12)
    return "loss %.1e / %.1e, gradient norm %.1e / %.1e (ours / PEFT float32, from float64)" % (
        rel(ours["losses"][0], ref64["losses"][0]), rel(ref["losses"][0], ref64["losses"][0]),
        rel(ours["grad_norms"][0], ref64["grad_norms"][0]), rel(ref["grad_norms"][0], ref64["grad_norms"][0]))


def gap(a, b):
    """The largest relative difference of two runs' losses, gradient norms and rates."""
    worst = 0.0
    for key in ("losses", "grad_norms", "lrs"):
        for x, y in zip(a[key], b[key]):
            worst = max(worst, abs(x - y) / max(abs(y), 1e-12))
    return worst


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("gen")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--out", required=True)
    p = sub.add_parser("compare")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--ours", required=True, help="lora_fuzz_ours, built as the top of this file says")
    a = ap.parse_args()
    return {"gen": gen, "compare": compare}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
