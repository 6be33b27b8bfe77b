#!/usr/bin/env bash
# On the GPU machine, after benches/gpu/stage.sh here: the kernel test suites under NVIDIA's
# compute-sanitizer, GPU only (POLYADAPT_TEST_DEVICES=gpu): memcheck (out-of-bounds and
# misaligned accesses, leaks of device memory) on every suite, racecheck (shared-memory hazards
# between threads of a block) and synccheck on the suites with shared-memory tiles (attention,
# LoRA, the norms and reductions of cuda_kernels). The shim cannot see these: it runs a block's
# threads as fibers in order. Writes $OUT/sanitizer.log; prints one line per run.
#
#   bash benches/gpu/sanitize.sh [suite ...]
set -uo pipefail
source benches/gpu/setup.sh || exit 2
export POLYADAPT_TEST_DEVICES=gpu REQUIRE_GPU=1
suites=("${@:-cuda_kernels cuda_attention cuda_lora cuda_step_kernels}")
status=0
log="$out/sanitizer.log"
: >"$log"
for t in ${suites[@]}; do
    [ -x "$bin/$t" ] || { echo "$t: not in the archive"; continue; }
    tools="memcheck"
    case $t in cuda_kernels|cuda_attention|cuda_lora) tools="memcheck racecheck synccheck" ;; esac
    for tool in $tools; do
        echo "=== $t: $tool" >>"$log"
        timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 20 "$bin/$t" --test-threads=1 >>"$log" 2>&1
        rc=$?
        echo "$t $tool: exit $rc, $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1), $(grep -E '^test result' "$log" | tail -1)"
        [ $rc = 0 ] || status=1
    done
done
exit $status
