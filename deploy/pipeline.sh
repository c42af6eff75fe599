#!/usr/bin/env bash
# The guide's CI/CD step: train and register, gate the promotion, monitor production nightly.
# Each stage stops the pipeline at its first failure, with the exit code of the command that
# failed (docs/lifecycle.md#exit-codes); deploy/github-actions.yml runs it on a schedule.
#
#   deploy/pipeline.sh train MODEL [HYDRA_OVERRIDES...]  # sweep, then `tabflow promote MODEL`
#   deploy/pipeline.sh monitor MODEL BATCH.csv          # `tabflow monitor MODEL BATCH.csv`
#
# train: exit 0 when production holds the new staging version afterwards (promoted, or
#        already there); 3 NOT BETTER, 4 NOT SIGNIFICANT, 5 OVER BUDGET (nothing changed);
#        1 or 2 when the sweep failed or its input was bad (nothing promoted).
# monitor: exit 0 OK, 3 drift, 4 degradation, 5 both, 2 bad input: a non-zero exit is the
#        signal to look (or to retrain: add --retrain to the monitor line).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

stage() { echo "== $*" >&2; }

case "${1:-}" in
  train)
    model=${2:?usage: deploy/pipeline.sh train MODEL [HYDRA_OVERRIDES...]}
    shift 2
    stage "sweep: python src/train.py -m $*"
    "$PYTHON" src/train.py -m "registry.model_name=$model" "$@"
    stage "gate: tabflow promote $model"
    "$PYTHON" -m tabflow promote "$model"
    ;;
  monitor)
    model=${2:?usage: deploy/pipeline.sh monitor MODEL BATCH}
    batch=${3:?usage: deploy/pipeline.sh monitor MODEL BATCH}
    stage "monitor: tabflow monitor $model $batch"
    "$PYTHON" -m tabflow monitor "$model" "$batch"
    ;;
  *)
    echo "usage: deploy/pipeline.sh train MODEL [HYDRA_OVERRIDES...] | monitor MODEL BATCH" >&2
    exit 2
    ;;
esac
