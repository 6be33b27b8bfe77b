#!/usr/bin/env python3
"""PyTorch on the same shapes as `engine-train bench`, timed the same way; JSON rows under the
engine's keys (`op/dtype/shape`) for benches/gpu/summarize.py.

    python3 benches/gpu/pytorch_kernels.py --from engine.json --json torch.json   # the GPU run
    python3 benches/gpu/pytorch_kernels.py --device cpu --quick                   # a check here

`--from` takes the shapes, warm-up, repeats and L2 flush of the engine's JSON, so the two
always measure the same list; without it the defaults below mirror the engine's
(engine/cuda/bench/shapes.rs: Config::full and Config::quick). Timing: warm-up, then each
launch alone between two CUDA events (wall clock on the CPU) after a copy that evicts the L2
cache; the median. What each row runs: torch_ops.py. peft is optional: without it the peft
rows are listed as skipped, with the reason.
"""

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MIB = 1 << 20
FULL = dict(
    batch=8, seq=256, prefix=20, rank=8, alpha=16.0, dtypes=["bf16", "f16", "f32"],
    models=[("e5-small", 12, 12, 32, False), ("smollm2-135m", 9, 3, 64, True), ("d128", 12, 2, 128, True)],
    lora=[("e5.q", 384, 384), ("e5.ffn_in", 384, 1536), ("smollm2.q", 576, 576), ("smollm2.v", 576, 192), ("d128.q", 1536, 1536)],
    align_pairs=32, align_tokens=128, hidden=[384, 576], ffn=1536, vocab=49152, ce_rows=1024,
    adamw=[(120, 4608), (4, 4 * MIB)], copy_bytes=512 * MIB, warmup=10, iters=50, flush_bytes=256 * MIB,
)
QUICK = dict(
    FULL, batch=2, seq=12, prefix=3, rank=4, alpha=8.0,
    models=[("e5-small", 2, 2, 32, False), ("smollm2-135m", 3, 1, 64, True), ("d128", 2, 1, 128, True)],
    lora=[("a", 32, 48), ("b", 48, 16)], align_pairs=3, align_tokens=8, hidden=[32], ffn=40, vocab=100,
    ce_rows=8, adamw=[(3, 1000)], copy_bytes=MIB, warmup=1, iters=3, flush_bytes=0,
)


def ragged_lengths(batch, mx):
    """engine/cuda/bench/mod.rs ragged_lengths: from about half of mx up to mx."""
    lo = (mx + 1) // 2
    return [mx] if batch == 1 else [lo + (mx - lo) * b // (batch - 1) for b in range(batch)]


def default_specs(c):
    """(op, dtype, shape, params) in the engine's order, with its keys."""
    out = [("copy", "bytes", f"n{c['copy_bytes']}", {"bytes": c["copy_bytes"]})]
    B, S, P, rows = c["batch"], c["seq"], c["prefix"], c["batch"] * c["seq"]
    for name, H, KV, D, causal in c["models"]:
        for dt in c["dtypes"]:
            for layout in ("dense", "packed"):
                lengths = [S] * B if layout == "dense" else ragged_lengths(B, S)
                shape = f"b{B}.s{S}.p{P}.h{H}.kv{KV}.d{D}.{layout}" + (".causal" if causal else "")
                p = dict(model=name, batch=B, seq=S, prefix=P, heads=H, kv_heads=KV, head_dim=D, causal=causal, layout=layout, lengths=lengths)
                out += [(op, dt, shape, p) for op in ("attn_fwd", "attn_bwd", "attn_fwd_bwd")]
    r = c["rank"]
    for name, din, dout in c["lora"]:
        for dt in c["dtypes"]:
            p = dict(name=name, tokens=rows, din=din, dout=dout, r=r, alpha=c["alpha"], scale=c["alpha"] / r)
            out += [(op, dt, f"t{rows}.in{din}.out{dout}.r{r}", p) for op in ("lora_fwd", "lora_bwd", "lora_fwd_bwd")]
    n, t = c["align_pairs"], c["align_tokens"]
    for d in c["hidden"]:
        for dt in c["dtypes"]:
            p = dict(pairs=n, tokens=t, hidden=d, source_lengths=ragged_lengths(n, t), target_lengths=ragged_lengths(n, t)[::-1])
            out.append(("align_fwd_bwd", dt, f"b{n}.t{t}.d{d}", p))
    hs = c["hidden"]
    for j, d in enumerate(hs):
        kinds = ["layernorm", "rmsnorm"] if len(hs) == 1 else (["rmsnorm"] if j == len(hs) - 1 else ["layernorm"])
        for kind in kinds:
            for dt in c["dtypes"]:
                out += [(f"{kind}_{ps}", dt, f"rows{rows}.d{d}", dict(rows=rows, hidden=d, eps=1e-5)) for ps in ("fwd", "bwd")]
    n = rows * c["ffn"]
    for dt in c["dtypes"]:
        out += [(op, dt, f"n{n}", dict(rows=rows, width=c["ffn"], n=n)) for op in ("gelu_fwd", "gelu_bwd", "swiglu_fwd", "swiglu_bwd")]
    for dt in c["dtypes"]:
        out.append(("ce_fwd_bwd", dt, f"n{c['ce_rows']}.c{c['vocab']}", dict(rows=c["ce_rows"], classes=c["vocab"])))
    out += [("adamw", "f32", f"k{k}.n{e}", dict(tensors=k, elems=e)) for k, e in c["adamw"]]
    return [dict(op=o, dtype=d, shape=s, params=p, key=f"{o}/{d}/{s}") for o, d, s, p in out]


def engine_specs(report):
    """One spec per key of the engine's rows (and skipped rows' keys that have a row)."""
    seen, out = set(), []
    for r in report["rows"]:
        if r["key"] not in seen:
            seen.add(r["key"])
            out.append(dict(op=r["op"], dtype=r["dtype"], shape=r["shape"], params=r["params"], key=r["key"], bytes=r["bytes"], flops=r["flops"], bound=r["bound"]))
    return out


def measure(run, warmup, iters, flush, cuda):
    import torch

    for _ in range(warmup):
        run()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(max(iters, 1)):
        if flush is not None:
            flush[1].copy_(flush[0])
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) * 1e3)
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), iters=len(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--from", dest="engine", help="the engine's --json: its shapes and timing settings")
    ap.add_argument("--quick", action="store_true", help="the engine's --quick shapes (without --from)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--only", help="comma-separated op prefixes (attn,lora,align,...)")
    ap.add_argument("--warmup", type=int)
    ap.add_argument("--iters", type=int)
    ap.add_argument("--flush-mib", type=int)
    ap.add_argument("--list", action="store_true", help="print the keys of the rows it would measure, and stop (no torch needed)")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    defaults = QUICK if a.quick else FULL
    if a.engine:
        try:
            with open(a.engine) as f:
                eng = json.load(f)
        except (OSError, ValueError) as e:
            sys.exit(f"pytorch_kernels.py: reading {a.engine}: {e}")
        specs, settings = engine_specs(eng), dict(warmup=eng["warmup"], iters=eng["iters"], flush_bytes=eng["flush_bytes"])
    else:
        specs, settings = default_specs(defaults), defaults
    if a.only:
        keep = tuple(a.only.split(","))
        specs = [s for s in specs if s["op"].startswith(keep) or s["op"] == "copy"]
    if a.list:
        print("\n".join(s["key"] for s in specs))
        return 0

    import torch

    from torch_ops import build

    if cuda and not torch.cuda.is_available():
        sys.exit("pytorch_kernels.py: torch sees no CUDA GPU (--device cpu runs on the CPU)")
    warmup = a.warmup if a.warmup is not None else settings["warmup"]
    iters = a.iters if a.iters is not None else settings["iters"]
    flush_bytes = (a.flush_mib * MIB if a.flush_mib is not None else settings["flush_bytes"]) if cuda else 0
    dev = "cuda" if cuda else "cpu"
    flush = (torch.empty(flush_bytes // 8, device=dev), torch.empty(flush_bytes // 8, device=dev)) if flush_bytes else None
    try:
        import peft

        peft_version = peft.__version__
    except ImportError as e:
        peft_version = None
        print(f"peft is not installed ({e}): the peft rows are skipped", file=sys.stderr)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    rep = dict(source="pytorch", device=name, torch=torch.__version__, peft=peft_version, timing="cuda-events" if cuda else "wall-clock",
               warmup=warmup, iters=iters, flush_bytes=flush_bytes, copy_gbs=None, rows=[], skipped=[], failed=[])
    for s in specs:
        try:
            impls = build(s["op"], s["dtype"], s["params"], dev)
        except Exception as e:  # one shape failing must not lose the rest of the run
            rep["failed"].append(dict(key=s["key"], impl="*", why=f"{type(e).__name__}: {e}"))
            print(f"  {s['key']}: FAILED to build: {e}", file=sys.stderr)
            continue
        for impl in impls:
            label, run = impl[0], impl[1]
            if isinstance(run, str):
                rep["skipped"].append(dict(key=s["key"], impl=label, why=run))
                continue
            ctx = impl[2]() if len(impl) > 2 else contextlib.nullcontext()
            try:
                with ctx:
                    st = measure(run, warmup, iters, flush, cuda)
            except Exception as e:
                rep["failed"].append(dict(key=s["key"], impl=label, why=f"{type(e).__name__}: {e}"))
                print(f"  {s['key']} {label}: FAILED: {e}", file=sys.stderr)
                continue
            nbytes = 2.0 * s["params"]["bytes"] if s["op"] == "copy" else s.get("bytes")
            secs = st["median_ms"] * 1e-3
            row = dict(key=s["key"], op=s["op"], impl=label, dtype=s["dtype"], shape=s["shape"], params=s["params"], **st,
                       bytes=nbytes, flops=s.get("flops"), gbs=nbytes / secs / 1e9 if nbytes else None,
                       tflops=s["flops"] / secs / 1e12 if s.get("flops") else None)
            if s["op"] == "copy" and rep["copy_gbs"] is None:
                rep["copy_gbs"] = row["gbs"]
            rep["rows"].append(row)
            print(f"  {s['op']:<14} {label:<28} {s['dtype']:<5} {s['shape']:<40} {st['median_ms']:10.4f} ms", file=sys.stderr)
        del impls
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    print(f"pytorch {torch.__version__} on {name}; peft {peft_version or 'missing'}; {len(rep['rows'])} rows, "
          f"{len(rep['skipped'])} skipped, {len(rep['failed'])} failed; copy {rep['copy_gbs'] or 0:.1f} GB/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=1)
    return 1 if rep["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
