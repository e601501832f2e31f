#!/usr/bin/env bash
# Main job: set up (if needed), generate the synthetic demo bag (2 cameras, 10 s, 10 Hz, 518x294, moving objects;
# seed 7 is held out from training), replay it through the node's pipeline with the embedded tiny model, and
# print the headline metrics and the report's path. Extra arguments go to vggt4d-replay (e.g. --through-ros).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
# shellcheck disable=SC1091
source "$ROOT/scripts/ros_env.sh"
OUT="${VGGT4D_DEMO_OUT:-$ROOT/out/demo}"
BAG="$ROOT/out/demo-bag"
if [ ! -f "$BAG/metadata.yaml" ]; then
  mkdir -p "$ROOT/out"
  vggt4d-synth "$BAG" --cameras 2 --width 518 --height 294 --rate 10 --duration 10 --seed 7 --objects 3
fi
vggt4d-replay "$BAG" --config "$ROOT/config/demo.yaml" --out "$OUT" --overwrite "$@"
python "$ROOT/scripts/headline.py" "$OUT/metrics.json"
echo "report: $OUT/report.md"
