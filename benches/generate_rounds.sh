#!/bin/bash
# Paired generation benchmark: ROUNDS rounds, each running, for batch 1 and batch 8, the engine
# (f32 and bf16 weights), transformers and llama.cpp one after the other, every run through
# /work/bin/quiet.sh (which pauses the background experiment while it runs). One JSON line per
# run is appended to OUT (the round number added). Summarise with generate_summary.py.
#
#   benches/generate_rounds.sh OUT [ROUNDS] [SIDES]
#   SIDES: a space-separated subset of "f32 bf16 transformers llamacpp" (default: all)
set -u
out=$1
rounds=${2:-3}
sides=${3:-"f32 bf16 transformers llamacpp"}
cd "$(dirname "$0")/.."
engine=$(cargo bench --bench generate --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "generate" and m.get("executable"):
        print(m["executable"])')
[ -x "$engine" ] || { echo "cannot build benches/generate.rs" >&2; exit 1; }
quiet=/work/bin/quiet.sh
hf=/root/.cache/polyadapt-llama/venv/bin/python
lcpp=/root/.cache/polyadapt-llamacpp/venv/bin/python
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
      line=$(timeout 175 "$quiet" "${cmd[@]}" 2>/dev/null | tail -1)
      if [ -n "$line" ]; then
        echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['round']=$r; d['side']='$side'; d['load_avg_after']=open('/proc/loadavg').read().split()[0]; print(json.dumps(d))" >> "$out"
      else
        echo "round $r batch $batch $side: no result" >&2
      fi
    done
  done
done
