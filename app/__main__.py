"""`python -m app`: the station window; `python -m app inspect ...`: headless."""

from app.cli import main

raise SystemExit(main())
