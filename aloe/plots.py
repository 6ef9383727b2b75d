"""Headless plotting shared by every script that writes a PNG."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend: scripts run on servers and in CI without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path, dpi: int = 120) -> Path:
    """Write a PNG atomically (temp file + rename, so a reader never sees half an image) and free the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp, dpi=dpi)
    pyplot().close(figure)
    tmp.replace(path)
    return path
