#!/usr/bin/env python3
"""Checks that adapters infer wrote in PEFT's format load in PEFT and give infer's logits.

How to run (on the GPU machine of the `device` tool; torch, transformers and peft; float32 on
the CPU; nothing is downloaded):

    python3 tests/ref/check_peft_adapter.py DIR [DIR ...]

Each DIR holds adapter_config.json and adapter_model.safetensors written by `infer lora ...
--format peft` (or infer_lora_save), and ours.npy: `infer logits FIXTURE --adapter-path DIR --ids
IDS --out ours.npy` on the CPU, IDS in ids.txt beside it (comma-separated), the fixture in the
config's base_model_name_or_path.  The model: the fixture's transformers class in float32 (eager
attention), peft.PeftModel.from_pretrained(model, DIR); PEFT must report no missing or unexpected
adapter tensors.  Prints the largest difference of the logits, relative to their largest
magnitude, and fails above 1e-4.
"""
import json
import os
import sys

import numpy as np
import peft
import torch
import transformers


def check(d):
    cfg = json.load(open(os.path.join(d, "adapter_config.json")))
    base = cfg["base_model_name_or_path"]
    arch = transformers.AutoConfig.from_pretrained(base).architectures[0]
    model = getattr(transformers, arch).from_pretrained(base, dtype=torch.float32, attn_implementation="eager")
    model = peft.PeftModel.from_pretrained(model, d)
    model.eval()
    # every tensor of the file went into the model
    from safetensors.torch import load_file
    saved = load_file(os.path.join(d, "adapter_model.safetensors"))
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    missing = [k for k in saved if k not in state]
    assert not missing, "not in the PEFT model: %s" % missing[:3]
    for k, v in saved.items():
        assert torch.equal(state[k].float(), v.float()), k
    ids = [int(x) for x in open(os.path.join(d, "ids.txt")).read().split(",")]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    ours = np.load(os.path.join(d, "ours.npy"))
    err = float(np.abs(logits - ours).max() / max(1e-6, np.abs(logits).max()))
    print("%s: %s, %d adapter tensors loaded, logits within %.2e (relative to the largest)" % (d, arch, len(saved), err))
    return err <= 1e-4


def main():
    ok = all([check(d) for d in sys.argv[1:]])
    print("ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
