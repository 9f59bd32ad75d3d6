import sys

from detector.cli import main

# `python -m detector.cli` worked while the CLI was one module; `python -m detector` is the documented way.
sys.exit(main())
