#!/usr/bin/env bash
# On the GPU machine (after benches/gpu/stage.sh here, REAL=1 for the step): the shapes of the
# GPU tuning goals (issue 7), each engine run followed by PyTorch on the same rows, in order of
# importance so that a run cut short still has the first tables:
#   1. the training step of e5-small, batch 32 x 256 (prefix + LoRA + alignment; goal 2x);
#   2. prefix attention fwd+bwd, batch 8, 12 heads of 64, seq 256/2048, prefix 0/20/128, bf16
#      (goal: within 1.25x of SDPA flash);
#   3. LoRA fwd+bwd, 4096 and 32768 tokens, d 384/768 (and 4096 at 4096 tokens), rank 8 / 64
#      (goal: fused 1.3x faster than the unfused cuBLAS sequence);
#   4. the alignment reduction against the copy bandwidth (goal: above 80%).
# Appends each joined table to $OUT/goals.md; the JSON files go into $OUT/goals-json.tar.gz.
set -uo pipefail
source benches/gpu/setup.sh || exit 2
work="$(mktemp -d)"
: >"$out/goals.md"
run() {
    local name="$1"
    shift
    "$bin/engine-train" bench --json "$work/$name-engine.json" "$@" >"$work/$name-engine.log" 2>&1
    PYTHONUNBUFFERED=1 python3 benches/gpu/pytorch_kernels.py --from "$work/$name-engine.json" --json "$work/$name-torch.json" >"$work/$name-torch.log" 2>&1
    { echo "## $name: engine-train bench $*"; echo; python3 benches/gpu/summarize.py "$work/$name-engine.json" "$work/$name-torch.json" --markdown; echo; } >>"$out/goals.md" 2>&1
    echo "$name done ($(date +%T))"
    tar -C "$work" -czf "$out/goals-json.tar.gz" .
}
fast=(--warmup 3 --iters 15)
run step-b32 --only step --batch 32 --seq 256 --dtypes bf16,f32 "${fast[@]}"
for s in 256 2048; do
    for p in 0 20 128; do
        run "attn-s$s-p$p" --only attention --batch 8 --seq $s --prefix $p --heads 12 --head-dim 64 --layouts dense --dtypes bf16 "${fast[@]}"
    done
done
run lora-t4096-r8 --only lora --batch 16 --seq 256 --lora 384x384,768x768,4096x4096 --rank 8 --dtypes bf16 "${fast[@]}"
run lora-t4096-r64 --only lora --batch 16 --seq 256 --lora 384x384,768x768,4096x4096 --rank 64 --dtypes bf16 "${fast[@]}"
run lora-t32768-r8 --only lora --batch 128 --seq 256 --lora 384x384,768x768 --rank 8 --dtypes bf16 "${fast[@]}"
run lora-t32768-r64 --only lora --batch 128 --seq 256 --lora 384x384,768x768 --rank 64 --dtypes bf16 "${fast[@]}"
run align --only align --dtypes bf16,f32 "${fast[@]}"
