"""Drive the real station window as an operator would, then quit through the menu (used by the exit test).

    python tests/window_walkthrough.py --config F --data-dir D --source DIR

Starts the station exactly as `python -m app` does (same argument parser, same
start-up and shut-down code), inspects once, opens every tab (a gallery picture,
the report charts saved as PNG), opens and closes a file dialog, switches on
continuous mode and chooses File ▸ Quit while an inspection is in flight. The process's exit code is the
station's; a crash at interpreter exit shows as a non-zero code.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.cli import gui_parser  # noqa: E402
from app.ui.run import qt_application, run_station  # noqa: E402

STEP_MS = 50
TIMEOUT_S = 60


def main() -> int:
    args = gui_parser().parse_args(sys.argv[1:])
    app = qt_application()
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QFileDialog

    from app.ui.station_window import StationWindow

    state = {"step": "wait-frame", "ticks": 0}

    def window() -> StationWindow | None:
        return next((w for w in app.topLevelWidgets() if isinstance(w, StationWindow)), None)

    def tick() -> None:
        state["ticks"] += 1
        w = window()
        if state["ticks"] * STEP_MS > TIMEOUT_S * 1000:
            print(f"walkthrough: stuck at {state['step']}", file=sys.stderr)
            app.exit(3)
            return
        if w is None:
            return
        step = state["step"]
        if step == "wait-frame" and w.view.image() is not None:
            box = getattr(w, "_problem_box", None)
            if box is not None:
                box.close()
            w.inspect_now()
            state["step"] = "wait-result"
        elif step == "wait-result" and w.last_result is not None:
            state["step"], state["tab"] = "tabs", 1
        elif step == "tabs":
            if state["tab"] < w.tabs.count():
                w.tabs.setCurrentIndex(state["tab"])
                state["tab"] += 1
                if w.gallery is not None and w.gallery.thumbs.count() and w.gallery.thumbs.currentRow() < 0:
                    w.gallery.thumbs.setCurrentRow(0)  # the detail view with the full-size frame
                if w.reports is not None and not state.get("charts"):
                    w.reports.refresh()
                    w.reports.save_png(Path(args.data_dir or ".") / "charts.png")
                    state["charts"] = True
            else:
                w.tabs.setCurrentIndex(0)
                dialog = QFileDialog(w, "Open pictures")
                dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
                dialog.show()
                QTimer.singleShot(200, dialog.reject)
                state["step"] = "continuous"
                state["quit_at"] = state["ticks"] + 10
        elif step == "continuous" and state["ticks"] >= state["quit_at"]:
            w.continuous_check.setChecked(True)  # goes on to the next picture (this one was inspected)
            state["step"], state["quit_by"] = "quit", state["ticks"] + 100
        elif step == "quit":
            if w.station.busy:  # continuous mode picked up the next picture: an inspection is in flight
                state["step"] = "done"
                quit_action = next(a for a in w.menuBar().actions()[0].menu().actions() if a.text() == "&Quit")
                quit_action.trigger()  # quit while the inspection runs
            elif state["ticks"] > state["quit_by"]:
                print("walkthrough: continuous mode started no inspection", file=sys.stderr)
                app.exit(4)

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(STEP_MS)
    code = run_station(args)
    timer.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
