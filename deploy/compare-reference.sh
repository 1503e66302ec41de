#!/usr/bin/env bash
# Measures `lineguard bench --engine cpu` and the reference pipeline (ONNX
# Runtime + numpy, in the project's shared bench folder) back to back on the
# same machine, and prints both with their ratio per stage.
#
# usage: deploy/compare-reference.sh SHARED_BENCH_DIR DATA_DIR [CATEGORY]
#   SHARED_BENCH_DIR  the folder holding reference/bench.py and reference/pth_to_onnx.py
#   DATA_DIR          an MVTec-layout data set (tests/fixtures/dataset/make_dataset.py DIR --set dev)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
ref="$1" data="$2" cat="${3:-brick}"
[ -f "$ref/reference/bench.py" ] || { echo "$ref/reference/bench.py: not found" >&2; exit 2; }
[ -d "$data/$cat/train/good" ] || { echo "$data/$cat/train/good: not found" >&2; exit 2; }

python3 -c "import onnx, onnxruntime, sklearn, scipy, PIL" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --user onnx onnxruntime scikit-learn numpy scipy pillow
weights="$(deploy/fetch-weights.sh)"
cargo build --release --locked --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The encoder is timed on the stage 3+4 graph (what lineguard runs); the
# reference's numpy stages read features from the full-tap graph.
python3 "$ref/reference/pth_to_onnx.py" "$weights" --out-feat "$work/feat34.onnx" --feat-outputs stage3,stage4 >/dev/null
python3 "$ref/reference/pth_to_onnx.py" "$weights" --out-feat "$work/feat345.onnx" >/dev/null
python3 "$ref/reference/bench.py" --data "$data" --category "$cat" --onnx "$work/feat34.onnx" "$work/feat345.onnx" \
  --configs stage3,stage4 --out "$work/ref.json" >/dev/null

target/release/lineguard model import "$weights" --out "$work/lite0.onnx" >/dev/null
sed -e "s#/var/lib/lineguard/models/efficientnet-lite0.onnx#lite0.onnx#" \
    -e "s#/var/lib/lineguard/banks/default.bank#default.bank#" -e "/^\[frame\]/,/^pixel_format/d" \
    firmware-config/lineguard.toml > "$work/lineguard.toml"
LINEGUARD_LOG=warn target/release/lineguard bench --json --engine cpu --config "$work/lineguard.toml" \
  --images "$data/$cat/train/good" --frames-from "$data/$cat/test/good" --frames 200 > "$work/lg.json"

python3 - "$work/ref.json" "$work/lg.json" <<'PY'
import json, sys
ref, lg = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
r_enc = ref["ort"]["feat34.onnx"]["median_ms"]
r_np = ref["numpy"]["stage3+stage4"]
s = lg["stages_ms"]
rows = [
    ("load/preprocess", ref["load_resize_png"]["median_ms"], s["preprocess"]["median"]),
    ("encoder", r_enc, s["encoder"]["median"]),
    ("patch features", r_np["embed"]["median_ms"], s["features"]["median"]),
    ("nearest neighbour", r_np["knn"]["median_ms"], s["nearest_neighbour"]["median"]),
    ("map (upsample+blur)", r_np["postprocess"]["median_ms"], s["map"]["median"]),
]
print(f"{'stage (median ms)':<22}{'reference':>10}{'lineguard':>11}{'ratio':>8}")
for name, a, b in rows:
    print(f"{name:<22}{a:>10.2f}{b:>11.2f}{b / a:>8.2f}")
ta, tb = sum(r[1] for r in rows), sum(r[2] for r in rows)
print(f"{'total':<22}{ta:>10.2f}{tb:>11.2f}{tb / ta:>8.2f}")
print(f"lineguard: nearest neighbour / encoder = {s['nearest_neighbour']['median'] / s['encoder']['median']:.2f}; "
      f"bank {lg['bank_rows']} x {lg['dim']}; {lg['engine']}")
PY
