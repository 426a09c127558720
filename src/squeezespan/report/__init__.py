"""Reports of runs: sample grids (grid), kNN curves and accuracy bars (plots), the demo's Markdown report (demo)."""

from .grid import save_image_grid

__all__ = ["save_image_grid"]
