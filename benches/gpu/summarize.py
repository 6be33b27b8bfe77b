#!/usr/bin/env python3
"""Joins `engine-train bench --json` and `pytorch_kernels.py --json` on their keys
(`op/dtype/shape`) and prints one table: engine time, PyTorch time, their ratio
(torch/engine > 1: the engine is faster), and the engine's GB/s against its measured copy
bandwidth (memory-bound rows) or TFLOP/s (attention, LoRA). Standard library only.

    python3 benches/gpu/summarize.py engine.json torch.json [--markdown]

Pairs: every engine row with every PyTorch row of its key, except that the engine's unfused
LoRA sequence (cuBLAS) is paired with PyTorch's unfused one only. An engine row with no
PyTorch partner gets '-'.
"""

import argparse
import json
import sys


def load(path, source):
    try:
        with open(path) as f:
            rep = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"summarize.py: reading {path}: {e}")
    if rep.get("source") != source:
        sys.exit(f"summarize.py: {path} is not a {source} report (source = {rep.get('source')!r})")
    return rep


def pairs(engine, torch):
    by_key = {}
    for t in torch["rows"]:
        by_key.setdefault(t["key"], []).append(t)
    for e in engine["rows"]:
        partners = by_key.get(e["key"], [])
        if e["impl"] == "unfused-cublas":
            partners = [t for t in partners if t["impl"] == "unfused"]
        for t in partners or [None]:
            yield e, t


def cells(e, t):
    ratio = f"{t['median_ms'] / e['median_ms']:.2f}" if t and e["median_ms"] > 0 else "-"
    if e.get("bound") == "memory":
        frac = e.get("copy_fraction")
        perf = f"{e['gbs']:.0f} GB/s" + (f" ({100 * frac:.0f}%)" if frac is not None else "")
    else:
        perf = f"{e['tflops']:.2f} TFLOP/s"
    return [e["op"], e["dtype"], e["shape"], e["impl"], f"{e['median_ms']:.4f}", t["impl"] if t else "-",
            f"{t['median_ms']:.4f}" if t else "-", ratio, perf]


HEAD = ["op", "dtype", "shape", "engine", "engine ms", "pytorch", "pytorch ms", "torch/engine", "engine rate (% copy)"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("engine")
    ap.add_argument("torch")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (for BENCHMARKS.md)")
    a = ap.parse_args()
    eng, tor = load(a.engine, "engine"), load(a.torch, "pytorch")
    out = []
    if "cuda-events" not in (eng.get("timing"), tor.get("timing")) or eng.get("timing") != tor.get("timing"):
        out.append("NOT GPU NUMBERS: one side was timed with the wall clock (host shim or CPU); never copy these into BENCHMARKS.md")
    out.append(f"engine:  {eng['version']} on {eng['device']}, copy {eng.get('copy_gbs') or 0:.1f} GB/s, "
               f"median of {eng['iters']} after {eng['warmup']} warm-up, L2 flush {eng['flush_bytes'] >> 20} MiB, kernel path {eng['kernel_path']}")
    out.append(f"pytorch: {tor['torch']} (peft {tor.get('peft') or 'missing'}) on {tor['device']}, copy {tor.get('copy_gbs') or 0:.1f} GB/s, "
               f"median of {tor['iters']} after {tor['warmup']} warm-up, L2 flush {tor['flush_bytes'] >> 20} MiB")
    table = [cells(e, t) for e, t in pairs(eng, tor)]
    if a.markdown:
        out.append("| " + " | ".join(HEAD) + " |")
        out.append("|" + "|".join("---" for _ in HEAD) + "|")
        out += ["| " + " | ".join(c) + " |" for c in table]
    else:
        width = [max(len(r[i]) for r in table + [HEAD]) for i in range(len(HEAD))]
        for r in [HEAD, ["-" * w for w in width]] + table:
            out.append("  ".join(c.ljust(w) if i < 4 or i == 5 else c.rjust(w) for i, (c, w) in enumerate(zip(r, width))).rstrip())
    for side, rep in (("engine", eng), ("pytorch", tor)):
        for what in ("skipped", "failed"):
            for n in rep.get(what, []):
                out.append(f"{side} {what}: {n['key']} ({n['impl']}): {n['why']}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
