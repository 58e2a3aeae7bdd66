"""What every figure test asks of a figure: it saves as a non-empty PNG of the figure's own size."""

import struct
from pathlib import Path

from matplotlib.figure import Figure

from elbox import plots

DPI = 100  # plots.save's default


def saves_as_png(figure: Figure, path: Path) -> bool:
    """Save ``figure`` with ``plots.save``; True when the file is a PNG of more than 1 kB whose
    width and height (its IHDR chunk) are the figure's size in inches times the DPI (to the pixel)."""
    expected = [v * DPI for v in figure.get_size_inches()]
    data = plots.save(figure, path).read_bytes()
    width, height = struct.unpack(">II", data[16:24])
    size_ok = abs(width - expected[0]) < 1 and abs(height - expected[1]) < 1  # fractional sizes are truncated
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000 and size_ok
