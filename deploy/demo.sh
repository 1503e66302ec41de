#!/usr/bin/env bash
# The demo, from a fresh Debian machine with Rust: installs what it needs,
# imports the ImageNet encoder, generates a simulated line (good and defective
# brick parts), enrolls the good ones and inspects a mixed batch, printing the
# verdicts. Everything lands in var/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
weights="$(deploy/fetch-weights.sh)"
cargo build --release --locked
lg=target/release/lineguard
work=var/demo
mkdir -p "$work"

[ -f "$work/lite0.onnx" ] || $lg model import "$weights" --out "$work/lite0.onnx"
[ -d "$work/line" ] || python3 tests/fixtures/dataset/make_dataset.py "$work/line" --set dev \
  --categories brick --train 40 --test-good 6 --per-kind 2

sed -e "s#/var/lib/lineguard/models/efficientnet-lite0.onnx#lite0.onnx#" \
    -e "s#/var/lib/lineguard/banks/default.bank#default.bank#" \
    firmware-config/lineguard.toml > "$work/lineguard.toml"

$lg enroll --config "$work/lineguard.toml" --images "$work/line/brick/train/good"
echo "--- inspecting the line (verdicts as JSON; heatmaps in $work/heatmaps) ---"
$lg inspect --config "$work/lineguard.toml" --out "$work/heatmaps" "$work"/line/brick/test/*/*.png |
  python3 -c '
import json, sys
for line in sys.stdin:
    v = json.loads(line)
    print(f"{v[\"frame\"][\"source\"].split(\"/test/\")[-1]:22s} {v[\"verdict\"]}  score {v[\"score\"]:.3f} "
          f"(threshold {v[\"threshold\"]:.3f})  regions {len(v[\"regions\"])}  {v[\"latency_ms\"][\"total\"]:.1f} ms")
'
