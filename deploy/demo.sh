#!/usr/bin/env bash
# The demo, from a fresh Debian machine with Rust: a station inspecting a
# simulated line of machined washers (some scratched, stained or chipped),
# publishing over its embedded MQTT broker, with the verdicts printed by a
# subscriber as they arrive. Runs DEMO_SECONDS (default 40) and then stops
# the station cleanly. Everything lands in var/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${DEMO_SECONDS:-40}"
port="${DEMO_MQTT_PORT:-18830}"   # not 1883: Debian's mosquitto service may hold it

deploy/install-deps.sh
weights="$(deploy/fetch-weights.sh)"
cargo build --release --locked
lg=target/release/lineguard
work=var/demo
mkdir -p "$work"

[ -f "$work/lite0.onnx" ] || $lg model import "$weights" --out "$work/lite0.onnx"
[ -d "$work/good" ] || $lg synth --out "$work/good" --count 60 --seed 1000

# The shipped example configuration, pointed at the demo's folder and port.
sed -e "s#/var/lib/lineguard/models/efficientnet-lite0.onnx#lite0.onnx#" \
    -e "s#/var/lib/lineguard/banks/default.bank#default.bank#" \
    -e "s#state_dir = \"/var/lib/lineguard\"#state_dir = \"state\"#" \
    -e "s#127.0.0.1:1883#127.0.0.1:$port#" -e "s#^port = 1883#port = $port#" \
    -e "s#127.0.0.1:9898#127.0.0.1:19898#" \
    -e "/^\[frame\]/,/^pixel_format/d" \
    firmware-config/lineguard.toml > "$work/lineguard.toml"

[ -f "$work/default.bank" ] || $lg enroll --config "$work/lineguard.toml" --images "$work/good"

echo "--- station running for ${seconds}s: verdicts as they arrive on lineguard/demo-station/verdict ---"
$lg run --config "$work/lineguard.toml" 2> "$work/station.log" &
station=$!
trap 'kill $station 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  kill -0 $station 2>/dev/null || { cat "$work/station.log" >&2; exit 1; }
  sleep 0.2
done
$lg watch --port "$port" --station demo-station --seconds "$seconds"
kill -TERM $station
wait $station
trap - EXIT
echo "--- station stopped; log in $work/station.log, NG frames and heatmaps in $work/state/archive/ ---"
echo "metrics were at http://127.0.0.1:19898/metrics while it ran"
