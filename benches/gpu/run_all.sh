#!/usr/bin/env bash
# On the GPU machine, from the repository root, with gpu-bin/gpu-bin.tar.xz carried from a
# build here (benches/gpu/stage.sh): the GPU, the kernel tests with REQUIRE_GPU=1, the
# engine's bench, PyTorch on the same shapes, and one table joining them.
#
#   bash benches/gpu/run_all.sh [engine-train bench flags, e.g. --quick or --only attention,lora]
#
# Writes 7 files into $OUT (else bench-out/): nvidia-smi.txt, tests.log, engine.log,
# engine.json, torch.log, torch.json, summary.md (the device tool brings back 8 at most:
# sanitize.sh's log is the 8th). SKIP_TESTS=1 skips the tests;
# the archive's suites run (stage.sh's TESTS), on the devices POLYADAPT_TEST_DEVICES names.
# `--only step` times the whole training step against transformers + peft (torch_step.py) on
# the stand-in multilingual-e5-small.
# Exit status: 1 if a test, a bench row or a PyTorch row failed (the table still prints).
set -uo pipefail
source benches/gpu/setup.sh || exit 2
status=0

nvidia-smi >"$out/nvidia-smi.txt" 2>&1
head -20 "$out/nvidia-smi.txt"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
    : >"$out/tests.log"
    for t in cuda_kernels cuda_attention cuda_lora cuda_step_kernels cuda_train_step; do
        [ -x "$bin/$t" ] || { echo "test $t: not in the archive"; continue; }
        REQUIRE_GPU=1 "$bin/$t" >"$bin/$t.log" 2>&1
        rc=$?
        cat "$bin/$t.log" >>"$out/tests.log"
        echo "test $t: exit $rc ($(grep -E '^test result' "$bin/$t.log" | tail -1))"
        [ $rc = 0 ] || status=1
    done
fi

"$bin/engine-train" bench --json "$out/engine.json" "$@" >"$out/engine.log" 2>&1 || status=1
tail -3 "$out/engine.log"
[ -f "$out/engine.json" ] || { echo "run_all.sh: the engine's bench wrote no JSON (engine.log)"; exit 1; }

PYTHONUNBUFFERED=1 python3 benches/gpu/pytorch_kernels.py --from "$out/engine.json" --json "$out/torch.json" >"$out/torch.log" 2>&1 || status=1
tail -2 "$out/torch.log"
[ -f "$out/torch.json" ] || { echo "run_all.sh: the PyTorch script wrote no JSON (torch.log)"; exit 1; }

python3 benches/gpu/summarize.py "$out/engine.json" "$out/torch.json" --markdown >"$out/summary.md"
python3 benches/gpu/summarize.py "$out/engine.json" "$out/torch.json"
exit $status
