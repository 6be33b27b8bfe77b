"""Summary of a decoder_train_rounds.sh results file: per method and side, the median over
rounds of tokens/s and peak memory, and the median over rounds of the per-round ratios engine /
transformers + peft (paired: the two runs of a round ran one after the other).

    python3 benches/decoder_train_summary.py benches/results/decoder-train-DATE.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    by = defaultdict(dict)  # (method, side) -> round -> run
    for r in runs:
        by[(r["method"], r["side"])][r["round"]] = r
    methods = sorted({m for m, _ in by}, key=["lora", "lora_qv", "prefix", "prompt", "full"].index)
    cell = lambda v: f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"
    print("| method | engine tokens/s | transformers+peft tokens/s | speed ratio (range) | engine peak MB | transformers+peft peak MB | memory ratio | rounds |")
    print("|---|---|---|---|---|---|---|---|")
    for m in methods:
        ours, theirs = by.get((m, "engine"), {}), by.get((m, "transformers"), {})
        paired = sorted(set(ours) & set(theirs))
        if not paired:
            continue
        speed = [ours[r]["tokens_per_s"] / theirs[r]["tokens_per_s"] for r in paired]
        mem = [ours[r]["peak_rss_mb"] / theirs[r]["peak_rss_mb"] for r in paired]
        print(f"| {m} | {cell([ours[r]['tokens_per_s'] for r in paired])} | {cell([theirs[r]['tokens_per_s'] for r in paired])} "
              f"| {statistics.median(speed):.2f} ({min(speed):.2f}-{max(speed):.2f}) "
              f"| {cell([ours[r]['peak_rss_mb'] for r in paired])} | {cell([theirs[r]['peak_rss_mb'] for r in paired])} "
              f"| {statistics.median(mem):.2f} | {len(paired)} |")
    for (m, side), rounds in sorted(by.items()):
        r = next(iter(rounds.values()))
        print(f"{m} {side}: {r['tokens_per_batch']:.0f} tokens per batch ({r['target_tokens_per_batch']:.0f} targets), "
              f"{r['params_trainable']} trainable, losses of round 1 start {r['losses'][:3]}")


if __name__ == "__main__":
    main(sys.argv[1])
