#!/usr/bin/env bash
# Install the inspection station on a plant PC (Linux): the station runtime only
# (ONNX Runtime, OpenCV, Qt; no torch, nothing to compile) in its own virtual
# environment, a `metal-inspection-station` command, and a desktop entry.
#
#   bash installer/install.sh                          # from this checkout (needs PyPI or a proxy)
#   bash installer/install.sh --wheelhouse DIR         # offline, from installer/build-wheelhouse.sh's folder
#   bash installer/install.sh --prefix /opt/mis --bin-dir /usr/local/bin --no-desktop
#
# As root it installs to /opt/metal-inspection-station, links the command into
# /usr/local/bin and adds the Debian libraries Qt's X11 plugin needs. Run it
# again to upgrade (settings and the inspection log live elsewhere and stay).
# Remove with PREFIX/uninstall.sh.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
NAME=metal-inspection-station

if [ "$(id -u)" = 0 ]; then
    PREFIX=/opt/$NAME; BIN_DIR=/usr/local/bin; APPS_DIR=/usr/share/applications
else
    PREFIX="$HOME/.local/opt/$NAME"; BIN_DIR="$HOME/.local/bin"; APPS_DIR="$HOME/.local/share/applications"
fi
WHEELHOUSE=""; DESKTOP=1; PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2;;
        --bin-dir) BIN_DIR="$2"; shift 2;;
        --wheelhouse) WHEELHOUSE="$(cd "$2" && pwd)"; shift 2;;
        --no-desktop) DESKTOP=0; shift;;
        --python) PY="$2"; shift 2;;
        -h|--help) sed -n '2,14p' "$0"; exit 0;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2;;
    esac
done

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "error: $PY is older than Python 3.10" >&2; exit 1; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # Qt 6.5+ on X11 needs libxcb-cursor0; the others are missing from minimal images.
    apt-get install -y -q --no-install-recommends libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 \
        libxkbcommon-x11-0 libegl1 libgl1 >/dev/null
fi

echo "installing into $PREFIX"
mkdir -p "$PREFIX" "$BIN_DIR"
[ -x "$PREFIX/venv/bin/python" ] || "$PY" -m venv "$PREFIX/venv"
PIP=("$PREFIX/venv/bin/python" -m pip --disable-pip-version-check -q)
if [ -n "$WHEELHOUSE" ]; then
    "${PIP[@]}" install --no-index --find-links "$WHEELHOUSE" --upgrade "$NAME"
else
    "${PIP[@]}" install --upgrade "$HERE"
fi

# The command: a tiny script, so the venv never has to be on PATH.
cat > "$PREFIX/$NAME" <<LAUNCH
#!/bin/sh
exec "$PREFIX/venv/bin/python" -m app "\$@"
LAUNCH
chmod +x "$PREFIX/$NAME"
ln -sf "$PREFIX/$NAME" "$BIN_DIR/$NAME"

ICON="$PREFIX/venv/share/$NAME/icons/station.svg"
if [ "$DESKTOP" = 1 ]; then
    mkdir -p "$APPS_DIR"
    cat > "$APPS_DIR/$NAME.desktop" <<DESKTOPFILE
[Desktop Entry]
Type=Application
Name=Inspection station
Comment=Find scratches and pits on metal parts: PASS or FAIL
Exec=$PREFIX/$NAME
Icon=$ICON
Terminal=false
Categories=Utility;
DESKTOPFILE
fi

cat > "$PREFIX/uninstall.sh" <<UNINSTALL
#!/bin/sh
# Removes the program. Settings (~/.config/$NAME) and inspection logs stay.
rm -f "$BIN_DIR/$NAME" "$APPS_DIR/$NAME.desktop"
rm -rf "$PREFIX"
echo "removed $NAME from $PREFIX"
UNINSTALL
chmod +x "$PREFIX/uninstall.sh"

# Prove it works: the shipped model loads and runs without torch.
"$PREFIX/venv/bin/python" - <<'CHECK'
import numpy as np
from detector import Detector
det = Detector()
det.detect(np.full((64, 64), 128, np.uint8))
print(f"model {det.model_id} runs ({det.device})")
CHECK
echo "installed: $BIN_DIR/$NAME  (start the station with: $NAME)"
