"""Summary of a generate_rounds.sh results file: per side and batch, the median over rounds of
tokens/s (whole generation, prefill included) and of decode tokens/s, their ranges, and the median over rounds of the per-round ratio engine / baseline (paired: the runs of
one round ran one after the other).

    python3 benches/generate_summary.py benches/results/generate-DATE.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    by = defaultdict(dict)  # (side, batch) -> round -> run
    for r in runs:
        by[(r["side"], r["batch"])][r["round"]] = r
    print("| side | batch | tokens/s median (range) | decode tokens/s median (range) | rounds |")
    print("|---|---|---|---|---|")
    for (side, batch), rounds in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tps = [r["tokens_per_s"] for r in rounds.values()]
        dps = [r["decode_tokens_per_s"] for r in rounds.values()]
        cell = lambda v: f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        print(f"| {side} | {batch} | {cell(tps)} | {cell(dps)} | {len(tps)} |")
    print()
    print("| batch | engine | baseline | ratio tokens/s (median of rounds; range) | ratio decode tokens/s |")
    print("|---|---|---|---|---|")
    for batch in sorted({b for _, b in by}):
        for ours in ("f32", "bf16"):
            for base in ("transformers", "transformers1", "llamacpp"):
                a, b = by.get((ours, batch), {}), by.get((base, batch), {})
                common = sorted(set(a) & set(b))
                if not common:
                    continue
                rt = [a[k]["tokens_per_s"] / b[k]["tokens_per_s"] for k in common]
                rd = [a[k]["decode_tokens_per_s"] / b[k]["decode_tokens_per_s"] for k in common]
                print(f"| {batch} | {ours} | {base} | {statistics.median(rt):.2f} ({min(rt):.2f}-{max(rt):.2f}) "
                      f"| {statistics.median(rd):.2f} ({min(rd):.2f}-{max(rd):.2f}) |")


if __name__ == "__main__":
    main(sys.argv[1])
