"""Greedy generation speed of llama.cpp (through llama-cpp-python==0.3.36, built from source on
this machine, so with its native AVX-512 kernels) on the same GGUF file, measured as
`cargo bench --bench generate` measures the engine: the first --batch prompts of
benches/prompts/generate.txt, one sequence each in one llama.cpp context (n_seq_max = batch),
decoded together (one llama_decode per step over every sequence's new token, as llama.cpp's
`batched` example does), exactly --new-tokens new tokens each (end-of-sequence tokens do not
stop a sequence), greedy (argmax of each sequence's last logits); warm-up runs, then timed
runs; prints one JSON line. llama.cpp computes on the file's own quantised weights (Q4_1, Q8_0
embedding); the engine and transformers dequantise them to f32 or bf16.

    CMAKE_ARGS=... nice -n 19 /root/.cache/polyadapt-llamacpp/venv/bin/pip install llama-cpp-python==0.3.36
    /root/.cache/polyadapt-llamacpp/venv/bin/python benches/generate_llamacpp.py --batch 8

tokens_per_s = batch x new tokens / median whole time (prefill included); decode_tokens_per_s =
batch x (new tokens - 1) / (median whole time - median time of a one-token generation).
"""

import argparse
import ctypes
import json
import statistics
import sys
import time
from pathlib import Path

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GGUF = Path.home() / ".cache/polyadapt/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"


class Batched:
    """One llama.cpp context holding `n_seq` sequences of up to `per_seq` tokens each."""

    def __init__(self, llm, n_seq, per_seq, threads):
        p = llama_cpp.llama_context_default_params()
        p.n_ctx = n_seq * per_seq
        p.n_batch = max(512, p.n_ctx)
        p.n_ubatch = p.n_batch
        p.n_seq_max = n_seq
        p.n_threads = threads
        p.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(llm._model.model, p)
        assert self.ctx, "llama_init_from_model failed"
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm._model.model))
        self.batch = llama_cpp.llama_batch_init(p.n_batch, 0, 1)
        self.n_seq = n_seq

    def fill(self, items):
        """items: (token, position, sequence, wants logits); returns the batch row of each."""
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if logits else 0
        b.n_tokens = len(items)

    def next_tokens(self, rows):
        out = []
        for r in rows:
            ptr = llama_cpp.llama_get_logits_ith(self.ctx, r)
            out.append(int(np.argmax(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)))))
        return out

    def generate(self, prompts, new):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        items, rows = [], []
        for s, ids in enumerate(prompts):
            for j, t in enumerate(ids):
                items.append((t, j, s, j == len(ids) - 1))
            rows.append(len(items) - 1)
        self.fill(items)
        assert llama_cpp.llama_decode(self.ctx, self.batch) == 0
        outs = [[t] for t in self.next_tokens(rows)]
        for step in range(1, new):
            self.fill([(o[-1], len(p) + step - 1, s, True) for s, (p, o) in enumerate(zip(prompts, outs))])
            assert llama_cpp.llama_decode(self.ctx, self.batch) == 0
            for o, t in zip(outs, self.next_tokens(range(len(prompts)))):
                o.append(t)
        return outs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompts", type=Path, default=ROOT / "benches/prompts/generate.txt")
    p.add_argument("--print-tokens", action="store_true", help="also print the generated ids of the last run")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(args.gguf), n_ctx=256, n_threads=args.threads, n_threads_batch=args.threads, verbose=False)
    lines = args.prompts.read_text(encoding="utf-8").splitlines()[: args.batch]
    assert len(lines) == args.batch, f"--batch {args.batch} but {len(lines)} prompts"
    # The GGUF's tokenizer (no BOS for SmolLM2: add_bos_token is false in its metadata).
    prompts = [llm.tokenize(line.encode("utf-8"), add_bos=True, special=False) for line in lines]
    per_seq = max(map(len, prompts)) + args.new_tokens
    gen = Batched(llm, args.batch, per_seq, args.threads)
    load_s = time.perf_counter() - t0

    last = None

    def run(new):
        nonlocal last
        t = time.perf_counter()
        outs = gen.generate(prompts, new)
        s = time.perf_counter() - t
        assert all(len(o) == new for o in outs)
        last = outs
        return s

    for _ in range(args.warmup):
        run(args.new_tokens)
    whole, first = [], []
    for _ in range(args.runs):
        whole.append(run(args.new_tokens))
        first.append(run(1))
    t_whole, t_first = statistics.median(whole), statistics.median(first)
    result = {
        "engine": "llama.cpp", "versions": {"llama-cpp-python": llama_cpp.__version__},
        "model": args.gguf.name, "dtype": "gguf (Q4_1, Q8_0 embedding)", "threads": args.threads, "batch": args.batch,
        "new_tokens": args.new_tokens, "prompt_tokens": [len(x) for x in prompts], "load_s": load_s,
        "whole_s": whole, "first_token_s": first, "tokens_per_s": args.batch * args.new_tokens / t_whole,
        "decode_tokens_per_s": args.batch * (args.new_tokens - 1) / (t_whole - t_first),
    }
    if args.print_tokens:
        run(args.new_tokens)
        result["tokens"] = last
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
