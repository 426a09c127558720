"""Reports of runs: sample grids (and, from other modules here, curves, UMAPs and Markdown summaries)."""

from .grid import save_image_grid

__all__ = ["save_image_grid"]
