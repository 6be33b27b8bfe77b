#!/usr/bin/env bash
# Runs the host-shim kernel tests (every kernel's scalar path, and the tensor-core kernels with
# the emulated matrix instruction, on CPU threads) under AddressSanitizer and ThreadSanitizer.
#
# The shim and the kernels (C++, built by build.rs) are instrumented (POLYADAPT_SHIM_SANITIZE);
# the Rust code is not. So ASan checks every kernel access against the buffers' bounds (the
# buffers come from the system allocator, which ASan replaces), and TSan checks the kernels'
# shared memory: the shim runs each CUDA thread as a TSan fiber that synchronises only at
# __syncthreads and the warp collectives, so a missing barrier between one thread's write and
# another's read is reported as a race (kernels/shim/cuda_shim.h).
#
# Usage: scripts/cuda/sanitize.sh [address] [thread]     (both by default)
# Builds in target/sanitize (CARGO_TARGET_DIR overrides), without nvcc: only the shim matters
# here, and switching the normal build's options would make it rebuild.
set -euo pipefail
cd "$(dirname "$0")/../.."

modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(address thread)
tests=(--test cuda_kernels --test cuda_attention --test cuda_lora)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/sanitize}"
cxx="${CXX:-c++}"
triple_var="CARGO_TARGET_$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')_RUNNER"

for mode in "${modes[@]}"; do
  case "$mode" in
    address)
      rt="$("$cxx" -print-file-name=libasan.so)"
      # Leaks: Rust's test harness and the process-wide caches (device probe, kernel
      # registry) live until exit by design.
      export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0"
      ;;
    thread)
      rt="$("$cxx" -print-file-name=libtsan.so)"
      # The Rust code is not instrumented: tsan.supp says which reports that makes false.
      export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/scripts/cuda/tsan.supp"
      ;;
    *)
      echo "unknown sanitizer '$mode' (address or thread)" >&2
      exit 2
      ;;
  esac
  [[ -f "$rt" ]] || { echo "no $rt: install the compiler's sanitizer runtime (libasan/libtsan)" >&2; exit 1; }
  echo "== $mode sanitizer ($rt)" >&2
  # The runtime must come first in the process (ASan insists; TSan must see the first thread):
  # the test binaries run through `env LD_PRELOAD=...`, cargo and rustc themselves do not.
  env POLYADAPT_SHIM_SANITIZE="$mode" POLYADAPT_NVCC=none "$triple_var=env LD_PRELOAD=$rt" \
    cargo test --release --features cuda-shim "${tests[@]}"
done
echo "sanitizers clean: ${modes[*]}" >&2
