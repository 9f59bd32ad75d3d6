"""The station's Qt screens (PySide6). The only part of the station that imports Qt."""
