#!/bin/sh
# SPD and APD side by side: runs `pd decompose` with experiments/configs/spd_<target>.json and
# apd_<target>.json on each target, then `pd compare` writes one table (MMCS, ML2R, identity
# and dense-k errors, alive components, steps, wall time per run) to OUT/side_by_side.md.
#
#   experiments/side_by_side.sh [--targets "tms_5-2 tms_5-2-id ..."] [--seed S] [--steps N] [--out DIR]
#
# Default targets: tms_5-2 tms_5-2-id tms_40-10 resid_mlp1 resid_mlp2 (the full schedules take
# hours on 2 cores: APD residual MLP 1L is ~2 h, SPD TMS 40-10 ~20 min; docs/results.md).
# --steps N cuts both methods' schedules to N steps (the table's steps column says so).
# Each method trains its own copy of the target from the same run config and seed, so both
# decompose the same weights.
set -eu
targets="tms_5-2 tms_5-2-id tms_40-10 resid_mlp1 resid_mlp2"
seed=0
steps=""
out=runs/side_by_side
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --steps) steps="--steps $2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "side_by_side.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
make --no-print-directory build/pd >&2
dirs=""
for t in $targets; do
  for m in spd apd; do
    cfg="experiments/configs/${m}_${t}.json"
    [ -f "$cfg" ] || { echo "side_by_side.sh: no config $cfg" >&2; exit 2; }
    echo "== $m on $t" >&2
    # shellcheck disable=SC2086
    build/pd decompose "$cfg" --seed "$seed" $steps --out "$out/${m}_${t}" >&2
    dirs="$dirs $out/${m}_${t}"
  done
done
# shellcheck disable=SC2086
build/pd compare $dirs --out "$out/side_by_side.md"
echo "table: $out/side_by_side.md" >&2
