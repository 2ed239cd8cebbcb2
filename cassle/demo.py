"""`cassle demo` / `make demo`: the laptop demo on the embedded `synthetic` dataset (no download)."""

from __future__ import annotations

from pathlib import Path

from cassle.report.views import draw_views_figure


def run_demo(out: Path) -> int:
    """Draw sampled views of the synthetic dataset annotated with their omega into `out`."""
    figure = draw_views_figure("synthetic", out / "views.png", n_images=6, size=64, seed=0)
    print(f"demo: views of the synthetic dataset with their omega -> {figure}")
    return 0
