"""The inspection station: operator screen, inspection log and headless tools.

Everything outside `app.ui` is plain Python (no Qt) so the station's rules,
store and sources run and test headless.
"""

__version__ = "0.1.0"
