#!/bin/bash
# Paired decoder training benchmark: ROUNDS rounds, each running every method on the engine and
# then on transformers + peft, on the same batches (written once by the engine's bench). One
# JSON line per run is appended to OUT (round and side added). Summarise with
# decoder_train_summary.py.
#
#   [QUIET=WRAPPER] [HF_PYTHON=..] benches/decoder_train_rounds.sh OUT [ROUNDS] [METHODS]
#   METHODS: a space-separated subset of "lora lora_qv prefix prompt full" (default: all)
#   QUIET: a command every run goes through (the recorded figures used `quiet.sh CMD...`, which
#   pauses the background experiment sweep while CMD runs).
#   HF_PYTHON: the Python with torch, transformers, peft and gguf.
set -u
out=$1
rounds=${2:-3}
methods=${3:-"lora lora_qv prefix prompt full"}
cd "$(dirname "$0")/.."
engine=$(benches/bench_exe.sh decoder_train_step)
[ -x "$engine" ] || { echo "cannot build benches/decoder_train_step.rs" >&2; exit 1; }
quiet=${QUIET:-}
hf=${HF_PYTHON:-/root/.cache/polyadapt-llama/venv/bin/python}
batches=$(mktemp --suffix=.json)
trap 'rm -f "$batches"' EXIT
"$engine" --write-batches "$batches" || exit 1
for r in $(seq 1 "$rounds"); do
  for method in $methods; do
    for side in engine transformers; do
      case $side in
        engine) cmd=("$engine" --method "$method" --threads 2) ;;
        transformers) cmd=("$hf" benches/decoder_train_step.py --batches "$batches" --method "$method" --threads 2) ;;
      esac
      line=$(timeout 590 $quiet "${cmd[@]}" 2>/dev/null | tail -1)
      if [ -n "$line" ]; then
        echo "$line" | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); d['round']=$r; d['side']='$side'; d['load_avg_after']=open('/proc/loadavg').read().split()[0]; print(json.dumps(d))" >> "$out"
      else
        echo "round $r $method $side: no result" >&2
      fi
    done
  done
done
