"""hf_peer.py - the peer of bench_decode on the GPU: Hugging Face transformers
(PyTorch, bf16, the same weights) on a model folder, prefill and greedy
decode speed, timed with CUDA events after a warm-up.

    python3 bench/hf_peer.py DIR [--prompt 512] [--decode 128] [--runs 3]

prefill: one forward pass over a --prompt-token prompt (tok/s, median);
decode:  generate() of --decode tokens after an 8-token prompt with the
         default (dynamic) cache, greedy, EOS ignored; tok/s of the tokens
         after the first (median).
"""
import argparse
import statistics

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.bfloat16).cuda().eval()
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (1, max(a.prompt, 8)), generator=g).cuda()

    def timed(fn):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        return s.elapsed_time(e) / 1e3

    with torch.no_grad():
        fwd = lambda: model(ids[:, : a.prompt])
        gen1 = lambda: model.generate(ids[:, :8], max_new_tokens=1, min_new_tokens=1, do_sample=False)
        genn = lambda: model.generate(ids[:, :8], max_new_tokens=a.decode, min_new_tokens=a.decode,
                                      do_sample=False)
        timed(fwd), timed(genn)  # warm-up
        pre = [a.prompt / timed(fwd) for _ in range(a.runs)]
        dec = []
        for _ in range(a.runs):
            t1, tn = timed(gen1), timed(genn)
            dec.append((a.decode - 1) / (tn - t1))
    print(f"transformers {__import__('transformers').__version__} torch {torch.__version__} bf16 on "
          f"{torch.cuda.get_device_name()}: {a.dir}")
    print(f"peer prefill: {statistics.median(pre):.1f} tok/s ({a.prompt}-token prompt, median of {a.runs})")
    print(f"peer decode:  {statistics.median(dec):.1f} tok/s ({a.decode} tokens, median of {a.runs})")


if __name__ == "__main__":
    main()
