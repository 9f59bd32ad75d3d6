"""Starts the station window (and the --screenshot tool)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path


def prepare_qt_environment() -> None:
    """Undo what importing opencv-python does to Qt's environment.

    opencv-python points QT_QPA_PLATFORM_PLUGIN_PATH (and QT_QPA_FONTDIR) at its
    bundled Qt5 plugins; PySide6 (Qt6) would then fail to load "xcb" on a real
    display. Call before the QApplication exists.
    """
    import cv2  # noqa: F401  (make sure its import-time changes have happened)

    for var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        os.environ.pop(var, None)


def qt_application():
    prepare_qt_environment()
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("Inspection station")
        app.setOrganizationName("metal-inspection-station")
    return app


def run_station(args: argparse.Namespace) -> int:
    from app.settings import load_settings

    settings, warnings = load_settings(args.config)
    overrides = {k: v for k, v in (("source", args.source), ("model_path", args.model), ("data_dir", args.data_dir)) if v}
    settings = replace(settings, **overrides)
    app = qt_application()
    from app.ui.station_window import StationWindow

    user = sign_in(settings, screenshot=bool(args.screenshot))
    if user is None:
        return 1
    window = StationWindow(settings, args.config, warnings, user=user)
    window.resize(1280, 800)
    window.show()
    if args.screenshot:
        return take_screenshot(app, window, args.screenshot, inspect=args.inspect)
    return app.exec()


def sign_in(settings, screenshot: bool = False):
    """Who uses the station: the setup user while there are no users, else whoever signs in."""
    from app.store import InspectionStore, StoreError
    from app.users import SETUP_USER, User, UserDirectory

    try:
        with InspectionStore(settings.db_path) as store:
            users = UserDirectory(store)
            if not users.any_users():
                return SETUP_USER
            if screenshot:
                # The documentation tool may only inspect, then it exits.
                return User("screenshot", "operator")
            from app.ui.login import LoginDialog

            dialog = LoginDialog(users)
            return dialog.user if dialog.exec() == LoginDialog.DialogCode.Accepted else None
    except StoreError:
        # Users cannot be checked: run with the least rights; the window reports the broken log.
        return User("unverified", "operator")


def wait_until(app, condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def take_screenshot(app, window, out: Path, inspect: bool, timeout: float = 30.0) -> int:
    """Wait for the first frame (and its inspection), save the window as `out`, close."""
    ok = wait_until(app, lambda: window.view.image() is not None, timeout)
    if not ok:
        print("error: no frame arrived from the source", file=sys.stderr)
    elif inspect:
        window.inspect_now()
        ok = wait_until(app, lambda: window.last_result is not None, timeout)
        if not ok:
            print("error: the inspection did not finish", file=sys.stderr)
    box = getattr(window, "_problem_box", None)
    if box is not None:
        box.close()
    wait_until(app, lambda: False, 0.2)  # let the last paint happen
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    saved = window.grab().save(str(out))
    window.close()
    if not saved:
        print(f"error: could not write {out}", file=sys.stderr)
        return 1
    print(f"screenshot: {out}")
    return 0 if ok else 1
