"""peft_lora.py - the peer of bench_lora on the GPU: PEFT LoRA training with
transformers (PyTorch, bf16 base weights, the same model folder), tokens/s,
model FLOP utilisation and peak memory.

    python3 bench/peft_lora.py DIR [--batch 4] [--seq 512] [--steps 10] [--rank 8]
                               [--targets q_proj,v_proj] [--checkpoint]

The model in bf16 on the GPU (attention: transformers' default, sdpa),
peft.LoraConfig(r, lora_alpha = 2 r, target_modules, every layer, dropout 0),
torch.optim.AdamW over the adapter (lr 1e-4); each step: forward with
labels = input ids (random, no padding), backward, optimizer step.  Two
warm-up steps, then --steps timed with CUDA events.  --checkpoint:
model.gradient_checkpointing_enable (use_reentrant False).  MFU: 4 x the
base matrices' parameters (forward and the input gradient; frozen weights
need no weight gradient) per token over 989 TFLOP/s (H100 SXM bf16 dense).
"""
import argparse

import peft
import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj")
    ap.add_argument("--checkpoint", action="store_true")
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.bfloat16).cuda()
    n_mat = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    n_mat += model.config.get_text_config().vocab_size * model.config.get_text_config().hidden_size  # the head
    if a.checkpoint:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = peft.LoraConfig(r=a.rank, lora_alpha=2 * a.rank, target_modules=a.targets.split(","), lora_dropout=0.0)
    model = peft.get_peft_model(model, cfg)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (a.batch, a.seq), generator=g).cuda()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(a.steps):
        loss = step()
    e.record()
    torch.cuda.synchronize()
    t = s.elapsed_time(e) / 1e3
    tok_s = a.steps * a.batch * a.seq / t
    print(f"peft {peft.__version__} torch {torch.__version__} bf16 on {torch.cuda.get_device_name()}: {a.dir}"
          f"{' (checkpointing)' if a.checkpoint else ''}")
    print(f"peer lora: {tok_s:.1f} tok/s, MFU {4 * n_mat * tok_s / 989e12:.3f}, peak memory "
          f"{torch.cuda.max_memory_allocated() / 1e6:.1f} MB, loss {loss.item():.4f} "
          f"(rank {a.rank} on {a.targets}, {a.batch} x {a.seq}, {a.steps} steps)")


if __name__ == "__main__":
    main()
