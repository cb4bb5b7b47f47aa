#!/bin/bash
# The full preset's re-run, in the background and resumable, two runs at a time with one thread
# each. Every run trains from a git worktree at TRAIN_COMMIT (the commit that trained the first
# records of this re-run), so that all its records come from one version of the code; seed 0's
# weights are then exported with the checkout's own code (`hdc reproduce --export-weights`).
# A run whose record exists with the same config is found, not trained again.
#
#   bash results/scripts/full_queue.sh              # every run of the full preset, seed 0 first
#   bash results/scripts/full_queue.sh ROW:SEED ... # only these
#
# Logs: runs/full_queue/<row>.seed<k>.log and runs/full_queue/queue.log.
set -euo pipefail
TRAIN_COMMIT=${TRAIN_COMMIT:-1e6c8df}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TREE=${TREE:-$ROOT/../wt_full}
LOGS=$ROOT/runs/full_queue
mkdir -p "$LOGS"
if [ ! -d "$TREE" ]; then
  git -C "$ROOT" worktree add --detach "$TREE" "$TRAIN_COMMIT"
fi
# the worktree trains into this checkout's world, runs and records
for path in data runs results/full_runs; do
  [ -L "$TREE/$path" ] || { rm -rf "${TREE:?}/$path"; ln -s "$ROOT/$path" "$TREE/$path"; }
done

shipped() {  # ROW: its seed-0 weights are in the manifest
  grep -q "\"$1/seed0/weights.pt\"" "$ROOT/results/full_runs/shipped_weights.json" 2>/dev/null
}

one_run() {  # ROW SEED
  local row=$1 seed=$2 log=$LOGS/$1.seed$2.log
  local record=$ROOT/results/full_runs/$row/seed0/record.json old=$LOGS/old_records/$row.json
  echo "start $(date -u +%FT%TZ)" >> "$log"
  # Seed 0 of a row that ships no weights yet trains again even where an older record of the same
  # config stands for it (its checkpoint is what ships); the old record is kept aside and compared.
  if [ "$seed" = 0 ] && ! shipped "$row" && [ -f "$record" ] && [ ! -f "$ROOT/runs/reproduce/full/$row/seed0/final.pt" ]; then
    mkdir -p "$LOGS/old_records" && mv "$record" "$old"
  fi
  (cd "$TREE" && PYTHONPATH=$TREE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
     "$ROOT/.venv/bin/hdc" reproduce --preset full --rows "$row" --seeds "$seed" --jobs 1) >> "$log" 2>&1 \
    || { echo "FAILED $(date -u +%FT%TZ)" >> "$log"; return 0; }
  if [ "$seed" = 0 ] && [ -f "$old" ]; then
    python3 -c "import json, sys; a, b = (json.load(open(f))['run']['probes'] for f in sys.argv[1:]); \
print('the old record, every probe:', 'equal' if a == b else 'DIFFERENT in ' + ', '.join(k for k in a if a[k] != b.get(k)))" \
      "$old" "$record" >> "$log"
  fi
  if [ "$seed" = 0 ] && ! shipped "$row"; then
    (cd "$ROOT" && OMP_NUM_THREADS=1 flock "$LOGS/export.lock" \
       "$ROOT/.venv/bin/hdc" reproduce --preset full --rows "$row" --export-weights) >> "$log" 2>&1 \
      || echo "EXPORT FAILED" >> "$log"
  fi
  echo "end $(date -u +%FT%TZ)" >> "$log"
}
export -f one_run shipped
export ROOT TREE LOGS

if [ $# -gt 0 ]; then
  runs=("$@")
else
  rows=$(cd "$ROOT" && .venv/bin/python -c "from hdc_lib.reproduce import PRESETS; print(' '.join(PRESETS['full'].rows))")
  runs=()
  for seed in 0 1 2; do for row in $rows; do runs+=("$row:$seed"); done; done
fi
echo "queue start $(date -u +%FT%TZ): ${runs[*]}" >> "$LOGS/queue.log"
printf '%s\n' "${runs[@]}" | tr ':' ' ' | xargs -P 2 -L 1 bash -c 'one_run "$0" "$1"'
echo "queue end $(date -u +%FT%TZ)" >> "$LOGS/queue.log"
