#!/usr/bin/env bash
# Build a folder of wheels (the station and everything it needs) for plant PCs
# without internet: copy the folder over, then `bash installer/install.sh --wheelhouse DIR`.
# Build it on the same OS, CPU architecture and Python version as the plant PCs.
#
#   bash installer/build-wheelhouse.sh dist/wheelhouse
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:?usage: build-wheelhouse.sh OUT_DIR}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
"$PY" -m pip --disable-pip-version-check wheel -q --wheel-dir "$OUT" "$HERE"
echo "wheelhouse: $OUT ($(ls "$OUT" | wc -l) wheels, $(du -sh "$OUT" | cut -f1))"
