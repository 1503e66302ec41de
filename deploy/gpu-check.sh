#!/usr/bin/env bash
# The GPU check, for a machine with a real GPU: installs what it needs,
# builds, runs the GPU parity tests (tests/gpu.rs) and the GPU benchmark,
# and prints a short report: adapter, per-stage GPU times, frames/s at batch
# 1, 8 and 32, parity errors, and the issue's bars (2 ms per frame at batch 1,
# 1,000 frames/s batched). Everything it writes goes to OUT_DIR.
#
#   deploy/gpu-check.sh [OUT_DIR]      (default target/gpu-check)
#
# After the build it takes a few minutes: the parity tests, and for each of
# GPU (f16 storage where the adapter has shader-f16), GPU f32 and CPU a
# 120-image enrollment and 200 + 2 x 200 timed frames.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gpu-check}"
mkdir -p "$out"

deploy/install-deps.sh
LINEGUARD_WEIGHTS="$(deploy/fetch-weights.sh)"
export LINEGUARD_WEIGHTS
cargo build --release --locked
cargo test --release --locked --test gpu --no-run 2>/dev/null
started=$(date +%s)
bin=target/release/lineguard

$bin devices | tee "$out/devices.txt"
$bin devices --json > "$out/devices.json"

echo "gpu-check: parity tests" >&2
cargo test --release --locked --test gpu -- --nocapture --test-threads 1 > "$out/parity.txt" 2>&1 || {
  tail -40 "$out/parity.txt"
  echo "gpu-check: parity tests FAILED (full log: $out/parity.txt)" >&2
  exit 1
}

echo "gpu-check: model and data set" >&2
[ -f "$out/lite0.onnx" ] || $bin model import "$LINEGUARD_WEIGHTS" --out "$out/lite0.onnx" --log warn
[ -d "$out/data/brick" ] || python3 tests/fixtures/dataset/make_dataset.py "$out/data" --set dev --categories brick \
  --train 120 --test-good 20 --per-kind 5 >/dev/null
cat > "$out/lineguard.toml" <<TOML
[station]
name = "gpu-check"
recipe = "default"
[model]
path = "lite0.onnx"
[engine]
kind = "gpu"
gpu_precision = "auto"
[recipes.default]
bank = "default.bank"
TOML
sed 's/gpu_precision = "auto"/gpu_precision = "f32"/' "$out/lineguard.toml" > "$out/lineguard-f32.toml"

bench() {  # NAME CONFIG ENGINE
  echo "gpu-check: bench $1" >&2
  $bin bench --json --log warn --config "$2" --engine "$3" --frames 200 \
    --images "$out/data/brick/train/good" --frames-from "$out/data/brick/test/good" > "$out/bench-$1.json"
}
bench gpu "$out/lineguard.toml" gpu
bench gpu-f32 "$out/lineguard-f32.toml" gpu
bench cpu "$out/lineguard.toml" cpu

python3 - "$out" "$(( $(date +%s) - started ))" <<'PY'
import json, re, sys
out, seconds = sys.argv[1], int(sys.argv[2])
gpu = json.load(open(f"{out}/bench-gpu.json"))
f32 = json.load(open(f"{out}/bench-gpu-f32.json"))
cpu = json.load(open(f"{out}/bench-cpu.json"))
parity = open(f"{out}/parity.txt").read()
print(f"\n== lineguard GPU check ({seconds} s after the build) ==")
print(f"engine: {gpu['engine']}\n   and: {f32['engine']}")
print(f"model {gpu['model']} input {gpu['input']}, bank {gpu['bank_rows']} x {gpu['dim']}, {gpu['frames']} frames")
print(f"{'stage (ms)':<18}{'gpu median':>12}{'gpu p99':>10}{'f32 median':>12}{'cpu median':>12}  (gpu: gpu_precision auto)")
for s in ["preprocess", "encoder", "features", "nearest_neighbour", "map", "total"]:
    g, h, c = gpu["stages_ms"][s], f32["stages_ms"][s], cpu["stages_ms"][s]
    print(f"{s:<18}{g['median']:>12.3f}{g['p99']:>10.3f}{h['median']:>12.3f}{c['median']:>12.3f}")
def fps(run):  # frames/s by batch size
    return {1: run["fps_batch1"], **{b["batch"]: b["fps"] for b in run["batched"]}}
for name, run in [("auto", gpu), ("f32", f32)]:
    print(f"frames/s ({name}): " + ", ".join(f"batch {b}: {v:.0f}" for b, v in fps(run).items()))
print(f"GPU / CPU total median: {gpu['stages_ms']['total']['median'] / cpu['stages_ms']['total']['median']:.3f}")
for line in parity.splitlines():
    if re.search(r"relative error|test result", line):
        print("parity: " + line.strip())
for name, run in [("f32, the default", f32), ("gpu_precision auto", gpu)]:
    wall = 1000.0 / fps(run)[1]
    best = max(v for b, v in fps(run).items() if b > 1)
    print(f"bar ({name}): {wall:.3f} ms per frame end to end at batch 1, upload and read-back included (<= 2 ms): {'PASS' if wall <= 2.0 else 'FAIL'}")
    print(f"bar ({name}): {best:.0f} frames/s batched (>= 1000): {'PASS' if best >= 1000 else 'FAIL'}")
PY
