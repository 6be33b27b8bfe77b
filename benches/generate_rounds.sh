#!/bin/bash
# Paired generation benchmark: ROUNDS rounds, each running, for batch 1 and batch 8, the engine
# (f32 and bf16 weights), transformers and llama.cpp one after the other. One JSON line per
# run is appended to OUT (the round number added). Summarise with generate_summary.py.
#
#   [QUIET=WRAPPER] [HF_PYTHON=..] [LLAMACPP_PYTHON=..] benches/generate_rounds.sh OUT [ROUNDS] [SIDES]
#   SIDES: a space-separated subset of "f32 bf16 transformers transformers1 llamacpp" (default:
#   f32 bf16 transformers llamacpp)
#   QUIET: a command every run goes through, e.g. one that pauses other work on the machine while
#   it runs (the recorded figures used such a wrapper, `quiet.sh CMD...`: SIGSTOP the background
#   experiment, run CMD, SIGCONT it).
#   HF_PYTHON, LLAMACPP_PYTHON: the Pythons with transformers (and gguf), and llama-cpp-python.
set -u
out=$1
rounds=${2:-3}
sides=${3:-"f32 bf16 transformers llamacpp"}
cd "$(dirname "$0")/.."
engine=$(benches/bench_exe.sh generate)
[ -x "$engine" ] || { echo "cannot build benches/generate.rs" >&2; exit 1; }
quiet=${QUIET:-}
hf=${HF_PYTHON:-/root/.cache/polyadapt-llama/venv/bin/python}
lcpp=${LLAMACPP_PYTHON:-/root/.cache/polyadapt-llamacpp/venv/bin/python}
for r in $(seq 1 "$rounds"); do
  for batch in 1 8; do
    for side in $sides; do
      case $side in
        f32|bf16) cmd=("$engine" --batch "$batch" --dtype "$side" --runs 3 --threads 2) ;;
        transformers) cmd=("$hf" benches/generate_transformers.py --batch "$batch" --runs 2 --threads 2) ;;
        # torch with one thread: its OpenMP barriers stall when another process holds a core.
        transformers1) cmd=("$hf" benches/generate_transformers.py --batch "$batch" --runs 2 --threads 1) ;;
        llamacpp) cmd=("$lcpp" benches/generate_llamacpp.py --batch "$batch" --runs 3 --threads 2) ;;
      esac
      line=$(timeout 175 $quiet "${cmd[@]}" 2>/dev/null | tail -1)
      if [ -n "$line" ]; then
        echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['round']=$r; d['side']='$side'; d['load_avg_after']=open('/proc/loadavg').read().split()[0]; print(json.dumps(d))" >> "$out"
      else
        echo "round $r batch $batch $side: no result" >&2
      fi
    done
  done
done
