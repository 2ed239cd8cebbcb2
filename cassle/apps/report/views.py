"""A figure of source images, two augmented views of each, and the omega recorded for every view."""

from __future__ import annotations

from pathlib import Path

import torch

from cassle.augment import OMEGA_SLICES, ViewSampler
from cassle.core.io import atomic_savefig
from cassle.data import collate_images, load_pretrain


def describe_omega(omega: torch.Tensor) -> str:
    """A short multi-line caption of one view's omega (14 values)."""
    part = {key: omega[columns].tolist() for key, columns in OMEGA_SLICES.items()}
    cy, cx, h, w = part["crop"]
    lines = [f"crop c=({cy:.2f},{cx:.2f}) hw=({h:.2f},{w:.2f})"]
    if any(part["color"]):
        b, c, s, hue = part["color"]
        lines.append(f"jitter b{b:+.2f} c{c:+.2f} s{s:+.2f} h{hue:+.2f}")
        lines.append("mean diff " + " ".join(f"{d:+.2f}" for d in part["color_diff"]))
    else:
        lines.append("no jitter")
    flags = [name for name in ("flip", "grayscale") if part[name][0] > 0.5]
    if part["blur"][0] > 0:
        flags.append(f"blur s={part['blur'][0]:.2f}")
    lines.append(", ".join(flags) if flags else "no flip/gray/blur")
    return "\n".join(lines)


def crop_box(omega: torch.Tensor, height: int, width: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) of a view's crop in source pixels, undoing the flip's mirroring of the centre."""
    cy, cx, h, w = omega[OMEGA_SLICES["crop"]].tolist()
    if omega[OMEGA_SLICES["flip"]].item() > 0.5:
        cx = 1.0 - cx
    return (cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height


def draw_views_figure(dataset: str, out: Path | str, root: Path | None = None, n_images: int = 4, size: int = 96,
                      seed: int = 0) -> Path:
    """Sample `n_images` images of `dataset`, two views each, and save the annotated figure to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    images = collate_images([load_pretrain(dataset, root)[i] for i in range(n_images)])[0]
    images = list(images) if isinstance(images, torch.Tensor) else images
    sampler = ViewSampler(size=size)
    generator = torch.Generator().manual_seed(seed)
    views = [sampler(images, generator=generator) for _ in range(2)]

    fig, axes = plt.subplots(n_images, 3, figsize=(7.5, 3.4 * n_images), squeeze=False)
    colors = ("tab:orange", "tab:cyan")
    for row, image in enumerate(images):
        source = axes[row, 0]
        source.imshow(image.permute(1, 2, 0).float().div(255 if image.dtype == torch.uint8 else 1).clamp(0, 1))
        source.set_title("source" if row == 0 else "")
        for k, (view, omega) in enumerate(views):
            left, top, w, h = crop_box(omega[row], image.shape[-2], image.shape[-1])
            source.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, lw=2, color=colors[k]))
            ax = axes[row, k + 1]
            ax.imshow(view[row].permute(1, 2, 0).clamp(0, 1))
            ax.set_title(f"view {k + 1}" if row == 0 else "", color=colors[k])
            ax.set_xlabel(describe_omega(omega[row]), fontsize=7, family="monospace")
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{dataset}: two views per image and their omega (seed {seed})")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.4 * n_images)))
    path = Path(out)
    atomic_savefig(fig, path)
    plt.close(fig)
    return path
