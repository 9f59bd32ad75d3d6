#!/usr/bin/env bash
# Install the inspection station on a plant PC (Linux): the station runtime only
# (ONNX Runtime, OpenCV, Qt; no torch, nothing to compile) in its own virtual
# environment, a `metal-inspection-station` command, and a desktop entry.
#
#   bash installer/install.sh                          # from this checkout (needs PyPI or a proxy)
#   bash installer/install.sh --wheelhouse DIR         # offline, from installer/build-wheelhouse.sh's folder
#   bash installer/install.sh --prefix /opt/mis --bin-dir /usr/local/bin --no-desktop
#   bash installer/install.sh --service [--service-user inspection] [--unit-dir DIR]   # also the line service
#   bash installer/install.sh --genicam                # also industrial GigE Vision / USB3 Vision cameras (Aravis)
#
# --service adds a systemd unit, metal-inspection-station.service, that runs
# `python -m app serve` (no window: the line triggers, the outputs deliver) at
# boot with the settings in /etc/metal-inspection-station/station.json (root)
# or the user's, logs to the journal, and stops with SIGTERM (the inspection in
# flight is finished and logged, the outputs drained). It is enabled and started
# when systemd runs; otherwise the command to do so is printed.
#
# --genicam adds the optional extra for GenICam cameras (source genicam://, docs/cameras.md): Debian's Aravis
# (gir1.2-aravis-0.8) and, since PyGObject compiles, a C compiler and the headers it builds against (as root;
# otherwise the apt-get command is printed and the install stops). The runtime without it compiles nothing.
# With --wheelhouse, the folder must hold a PyGObject wheel built on a PC like this one.
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
WHEELHOUSE=""; DESKTOP=1; PY=${PYTHON:-python3}; SERVICE=0; SERVICE_USER="$(id -un)"; GENICAM=0
if [ "$(id -u)" = 0 ]; then
    UNIT_DIR=/etc/systemd/system; SERVICE_CONFIG=/etc/$NAME/station.json
else
    UNIT_DIR="$HOME/.config/systemd/user"; SERVICE_CONFIG="$HOME/.config/$NAME/station.json"
fi
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX="$2"; shift 2;;
        --bin-dir) BIN_DIR="$2"; shift 2;;
        --wheelhouse) WHEELHOUSE="$(cd "$2" && pwd)"; shift 2;;
        --no-desktop) DESKTOP=0; shift;;
        --python) PY="$2"; shift 2;;
        --service) SERVICE=1; shift;;
        --service-user) SERVICE_USER="$2"; shift 2;;
        --service-config) SERVICE_CONFIG="$2"; shift 2;;
        --unit-dir) UNIT_DIR="$2"; shift 2;;
        --genicam) GENICAM=1; shift;;
        -h|--help) sed -n '2,27p' "$0"; exit 0;;
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

# GenICam: Aravis' typelib at run time; PyGObject's build needs a compiler, Python's headers, GObject
# introspection and cairo.
GENICAM_DEBS=(gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev pkg-config gcc python3-dev)
if [ "$GENICAM" = 1 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q --no-install-recommends "${GENICAM_DEBS[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${GENICAM_DEBS[@]}" >/dev/null; }
    else
        for pkg in "${GENICAM_DEBS[@]}"; do
            dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" \
                || { echo "error: --genicam needs: sudo apt-get install ${GENICAM_DEBS[*]}" >&2; exit 1; }
        done
    fi
fi
EXTRA=""; [ "$GENICAM" = 1 ] && EXTRA="[genicam]"

echo "installing into $PREFIX"
mkdir -p "$PREFIX" "$BIN_DIR"
[ -x "$PREFIX/venv/bin/python" ] || "$PY" -m venv "$PREFIX/venv"
PIP=("$PREFIX/venv/bin/python" -m pip --disable-pip-version-check -q)
if [ -n "$WHEELHOUSE" ]; then
    "${PIP[@]}" install --no-index --find-links "$WHEELHOUSE" --upgrade "$NAME$EXTRA"
else
    "${PIP[@]}" install --upgrade "$HERE$EXTRA"
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

UNIT="$UNIT_DIR/$NAME.service"
if [ "$SERVICE" = 1 ]; then
    mkdir -p "$UNIT_DIR" "$(dirname "$SERVICE_CONFIG")"
    if [ "$(id -u)" = 0 ] && [ "$SERVICE_USER" != root ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --create-home --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    # A system unit runs as the service user; a user unit (not root) as whoever installed it.
    USER_LINE=""; WANTED=default.target
    if [ "$(id -u)" = 0 ]; then USER_LINE="User=$SERVICE_USER"; WANTED=multi-user.target; fi
    cat > "$UNIT" <<SERVICEUNIT
[Unit]
Description=Metal-part inspection station (line service: PLC triggers, result outputs)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
$USER_LINE
Environment=INSPECTION_STATION_CONFIG=$SERVICE_CONFIG
ExecStart=$PREFIX/venv/bin/python -m app serve --trigger manual
# SIGTERM: the inspection in flight is finished and logged, the outputs are drained, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=90
Restart=on-failure
RestartSec=5

[Install]
WantedBy=$WANTED
SERVICEUNIT
    echo "service unit: $UNIT (settings: $SERVICE_CONFIG; set \"source\" there, e.g. a camera)"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        if [ "$(id -u)" = 0 ]; then systemctl daemon-reload && systemctl enable --now "$NAME.service"
        else systemctl --user daemon-reload && systemctl --user enable --now "$NAME.service"; fi
    else
        echo "systemd is not running here: enable it later with: systemctl daemon-reload && systemctl enable --now $NAME"
    fi
fi

cat > "$PREFIX/uninstall.sh" <<UNINSTALL
#!/bin/sh
# Removes the program (and its service unit). Settings (~/.config/$NAME) and inspection logs stay.
if [ -f "$UNIT" ] && [ -d /run/systemd/system ]; then systemctl disable --now "$NAME.service" 2>/dev/null || true; fi
rm -f "$UNIT"
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
if [ "$GENICAM" = 1 ]; then
    "$PREFIX/venv/bin/python" -c "from app.sources_genicam import list_cameras; print(f'GenICam: {len(list_cameras())} camera(s) found')"
fi
echo "installed: $BIN_DIR/$NAME  (start the station with: $NAME)"
