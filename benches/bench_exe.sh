#!/bin/bash
# bench_exe.sh NAME: builds the benchmark benches/NAME.rs (release) and prints its executable's
# path, which the round scripts run directly (with their own arguments, one process a run).
cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])' "$1"
