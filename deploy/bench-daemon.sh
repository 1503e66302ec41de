#!/usr/bin/env bash
# Benchmarks the whole service: `lineguard run` on the CPU engine with a
# synthetic camera at FPS (default 30) for SECONDS (default 60), publishing
# through its embedded broker to a subscriber. Prints the achieved verdict
# rate, drops, per-stage latency (median, p99) and the resident memory over time.
#
#   deploy/bench-daemon.sh [FPS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
fps="${1:-30}" seconds="${2:-60}" port=18840
deploy/install-deps.sh
weights="$(deploy/fetch-weights.sh)"
cargo build --release --locked --quiet
lg=target/release/lineguard
work=$(mktemp -d)
trap 'kill $station $sub 2>/dev/null || true; rm -rf "$work"' EXIT

$lg model import "$weights" --out "$work/lite0.onnx" >/dev/null
$lg synth --out "$work/good" --count 60 --seed 1000 >/dev/null
sed -e "s#/var/lib/lineguard/models/efficientnet-lite0.onnx#lite0.onnx#" \
    -e "s#/var/lib/lineguard/banks/default.bank#default.bank#" \
    -e "s#state_dir = \"/var/lib/lineguard\"#state_dir = \"state\"#" \
    -e "s#127.0.0.1:1883#127.0.0.1:$port#" -e "s#^port = 1883#port = $port#" \
    -e "s#127.0.0.1:9898#127.0.0.1:18841#" -e "s#^fps = 5.0#fps = $fps#" \
    -e "/^\[frame\]/,/^pixel_format/d" -e "s#^kind = \"auto\"#kind = \"cpu\"#" \
    firmware-config/lineguard.toml > "$work/lineguard.toml"
LINEGUARD_LOG=warn $lg enroll --config "$work/lineguard.toml" --images "$work/good" >/dev/null

LINEGUARD_LOG=warn $lg run --config "$work/lineguard.toml" 2> "$work/station.log" &
station=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
mosquitto_sub -p $port -t lineguard/demo-station/verdict > "$work/verdicts.jsonl" &
sub=$!
sleep 5   # warm-up, not counted
skip=$(wc -l < "$work/verdicts.jsonl")
rss=()
for i in $(seq "$seconds"); do
  sleep 1
  [ $((i % 10)) -eq 0 ] && rss+=("$(awk '/VmRSS/{print $2}' /proc/$station/status)")
done
kill -TERM $station; wait $station || true
kill $sub 2>/dev/null || true
python3 - "$work/verdicts.jsonl" "$seconds" "$fps" "${rss[*]}" "$skip" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().splitlines()[int(sys.argv[5]):]
rows = [json.loads(l) for l in lines if l.strip()]
secs, fps, rss = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split()
seqs = [r["frame"]["seq"] for r in rows]
offered = (max(seqs) - min(seqs) + 1) if seqs else 0
print(f"camera {fps:g} fps for {secs:g} s: {len(rows)} verdicts = {len(rows) / secs:.1f} verdicts/s; "
      f"{offered - len(rows)} of {offered} frames dropped (newest wins)")
def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]
print(f"{'stage':<18}{'median ms':>10}{'p99 ms':>10}")
for k in ["queue", "preprocess", "encoder", "features", "nearest_neighbour", "map", "total"]:
    v = [r["latency_ms"][k] for r in rows]
    print(f"{k:<18}{pct(v, .5):>10.2f}{pct(v, .99):>10.2f}")
print("resident memory every 10 s (MiB): " + " ".join(f"{int(x) / 1024:.0f}" for x in rss))
PY
