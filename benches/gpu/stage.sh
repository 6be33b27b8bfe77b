#!/usr/bin/env bash
# Builds here what the GPU machine runs (it has CUDA 13.0 and PyTorch but no Rust toolchain)
# and stages it in gpu-bin/ (ignored by git) at the repository root, stripped and packed into
# one archive for the carry: engine-train (--features cuda), the GPU tests (cuda_kernels,
# cuda_attention, cuda_lora, cuda_step_kernels, cuda_train_step; --features cuda-shim, so they
# also run on the shim), and what standin_model.py needs to make a stand-in multilingual-e5-small
# there (the real one is over the carry limit; the training-step test compares GPU and CPU on it).
# Then: benches/gpu/run_all.sh on the GPU machine (benches/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${POLYADAPT_NVCC:-}" ]; then
    POLYADAPT_NVCC="$(bash scripts/cuda/install-toolchain.sh | tail -1)/bin/nvcc"
fi
export POLYADAPT_NVCC REQUIRE_NVCC=1
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/gpu-bin/' "$exclude" 2>/dev/null || echo '/gpu-bin/' >>"$exclude"
stage=gpu-bin/stage
rm -rf gpu-bin && mkdir -p "$stage"

# engine-train first: the shim build below writes the same target/release/engine-train.
cargo build --release --locked --features cuda --bin engine-train
cp target/release/engine-train "$stage/engine-train"

# TESTS: the suites to pack (all by default; fewer keep the archive under the carry limit when
# REAL=1). REAL=1: the stand-in keeps the real encoder in f16 (+41 MB; standin_model.py).
tests="${TESTS:-cuda_kernels cuda_attention cuda_lora cuda_step_kernels cuda_train_step}"
cargo test --release --locked --features cuda-shim --no-run --message-format=json \
    $(printf -- '--test %s ' $tests) >gpu-bin/tests.jsonl
python3 - gpu-bin/tests.jsonl "$stage" <<'EOF'
import json, shutil, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], f"{sys.argv[2]}/{m['target']['name']}")
EOF
rm gpu-bin/tests.jsonl
strip "$stage"/*
# The tests find their fixtures under the path they were built in (CARGO_MANIFEST_DIR).
pwd >"$stage/manifest_dir"
e5="$("$stage/engine-train" fetch-model multilingual-e5-small | tail -1)"
python3 benches/gpu/standin_model.py stats "$e5" "$stage/e5-small" $([ "${REAL:-0}" = 1 ] && echo --real)
ls -l "$stage"
tar -C "$stage" -cJf gpu-bin/gpu-bin.tar.xz .
rm -rf "$stage"
ls -l gpu-bin/gpu-bin.tar.xz
