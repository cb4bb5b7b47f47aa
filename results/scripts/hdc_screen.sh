#!/usr/bin/env bash
# The screening of results/hdc_readings.md: every arm on the validation world (seed 1000), 900 steps,
# seed 0, one thread each, two at a time. Resumable: an arm whose name is already in the log is skipped.
# Run from the repository root: nohup bash results/scripts/hdc_screen.sh > /tmp/hdc_screen.log 2>&1 &
set -u
LOG=results/hdc_readings.jsonl
PY=.venv/bin/python
export PYTHONPATH="$PWD"  # this checkout's hdc_lib, whatever the venv's editable install points at
COMMON=(--world '{"seed": 1000}' --val-seed 1000 --steps 900 --threads 1 --log "$LOG")
KEEP=(train.checkpoint_every=10 train.keep_checkpoints=10)
arm() {  # name config overrides...
  local name=$1 config=$2; shift 2
  if [ -f "$LOG" ] && grep -q "\"name\": \"$name\"" "$LOG"; then echo "$name: done, skipped"; return; fi
  echo "$name: start $(date -u +%H:%M)"
  $PY results/scripts/world_ladder.py --name "$name" --config "$config" "${COMMON[@]}" "${KEEP[@]}" "$@"
  echo "$name: end $(date -u +%H:%M)"
}
arm E0 hdc_single model.sc_pair=same_appearance        # renders the validation world first, alone
arm E2 hdc_single model.sc_pair=third_window &
arm E3 hdc_single model.sc_pair=independent_appearance; wait
arm E4 hdc_single model.sc_pair=order_destroyed &
arm E2d hdc_single model.sc_pair=third_window model.sc_detach=true; wait
arm TC tc_only
# The weighting check of the rule's step 4, on the reading the rule kept (E0): three levels, W1 at t = 0.01.
arm W1 hdc model.weighting=invariance_levels model.weight_temperature=0.01
