"""Greedy generation speed of transformers' LlamaForCausalLM (float32, the GGUF dequantised by
transformers itself), measured as `cargo bench --bench generate` measures the engine: the first
--batch prompts of benches/prompts/generate.txt as one left-padded batch, exactly --new-tokens
new tokens each (min_new_tokens = max_new_tokens, so end-of-sequence tokens do not stop a
sequence), warm-up runs, then timed runs; prints one JSON line.

    /root/.cache/polyadapt-llama/venv/bin/python benches/generate_transformers.py --batch 8

tokens_per_s = batch x new tokens / median whole time (prefill included); decode_tokens_per_s =
batch x (new tokens - 1) / (median whole time - median time of a one-token generation).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = Path.home() / ".cache/polyadapt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (default) or eager")
    p.add_argument("--prompts", type=Path, default=ROOT / "benches/prompts/generate.txt")
    args = p.parse_args(argv)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name)
    model = LlamaForCausalLM.from_pretrained(args.gguf.parent, gguf_file=args.gguf.name, dtype=torch.float32,
                                             attn_implementation=args.attn).eval()
    load_s = time.perf_counter() - t0
    lines = args.prompts.read_text(encoding="utf-8").splitlines()[: args.batch]
    assert len(lines) == args.batch, f"--batch {args.batch} but {len(lines)} prompts"
    tok.padding_side = "left"
    enc = tok(lines, return_tensors="pt", padding=True)
    pad = model.config.eos_token_id if tok.pad_token_id is None else tok.pad_token_id

    def run(new):
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1,
                                 use_cache=True, pad_token_id=pad)
        s = time.perf_counter() - t
        assert out.shape[1] == enc["input_ids"].shape[1] + new
        return s

    for _ in range(args.warmup):
        run(args.new_tokens)
    whole, first = [], []
    for _ in range(args.runs):
        whole.append(run(args.new_tokens))
        first.append(run(1))
    t_whole, t_first = statistics.median(whole), statistics.median(first)
    print(json.dumps({
        "engine": "transformers", "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
        "model": args.gguf.name, "dtype": "f32", "attn": args.attn, "threads": args.threads, "batch": args.batch,
        "new_tokens": args.new_tokens, "prompt_tokens": [int(m.sum()) for m in enc["attention_mask"]], "load_s": load_s,
        "whole_s": whole, "first_token_s": first, "tokens_per_s": args.batch * args.new_tokens / t_whole,
        "decode_tokens_per_s": args.batch * (args.new_tokens - 1) / (t_whole - t_first),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
