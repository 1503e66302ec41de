#!/usr/bin/env bash
# Installs lineguard as a systemd service on this machine (run as root):
# the binary, a system user, /etc/lineguard/lineguard.toml (kept if present),
# the encoder imported to /var/lib/lineguard/models, and the unit.
#
#   deploy/install.sh [--binary PATH] [--no-start]
#
# Enroll good parts before starting: sudo -u lineguard lineguard enroll --images DIR
set -euo pipefail
cd "$(dirname "$0")/.."
binary="" start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root" >&2; exit 1; }

deploy/install-deps.sh
if [ -z "$binary" ]; then
  cargo build --release --locked
  binary=target/release/lineguard
fi
install -m 0755 "$binary" /usr/local/bin/lineguard

id lineguard >/dev/null 2>&1 || useradd --system --home-dir /var/lib/lineguard --shell /usr/sbin/nologin lineguard
for g in video render; do getent group "$g" >/dev/null && usermod -aG "$g" lineguard; done
install -d -m 0750 -o lineguard -g lineguard /var/lib/lineguard /var/lib/lineguard/models /var/lib/lineguard/banks
install -d -m 0755 /etc/lineguard
if [ -f /etc/lineguard/lineguard.toml ]; then
  echo "install.sh: keeping the existing /etc/lineguard/lineguard.toml"
else
  install -m 0640 -g lineguard firmware-config/lineguard.toml /etc/lineguard/lineguard.toml
fi

model=/var/lib/lineguard/models/efficientnet-lite0.onnx
if [ ! -f "$model" ]; then
  weights="$(LINEGUARD_CACHE=/var/cache/lineguard deploy/fetch-weights.sh)"
  /usr/local/bin/lineguard model import "$weights" --out "$model"
  chown lineguard:lineguard "$model"
fi

install -m 0644 deploy/lineguard.service /etc/systemd/system/lineguard.service
systemctl daemon-reload
systemctl enable lineguard.service
if [ "$start" = 1 ] && [ -f /var/lib/lineguard/banks/default.bank ]; then
  systemctl restart lineguard.service
  echo "install.sh: started; follow it with: journalctl -u lineguard -f"
else
  echo "install.sh: installed; enroll first (the bank is missing), then: systemctl start lineguard"
fi
