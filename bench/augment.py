"""Throughput of ViewSampler against the authors' reference design, measured in the same run.

Reference design (what the CASSLE/AugSelf code does): per-image RandomResizedCrop + horizontal flip with
torchvision.transforms on PIL images, then to_tensor and stacking (the DataLoader side); then, batched in torch,
kornia-0.4.1-style colour jitter (per-sample factors, ONE op order per batch, saturation and hue through an
RGB <-> HSV round trip each), random grayscale, and Gaussian blur (per-sample sigma, grouped separable conv over
linspace(-k/2, k/2, k)), each on the subset of samples it applies to. Both designs use the same settings and start
from decoded images in memory (PIL images for the reference, uint8 tensors for ViewSampler); normalisation is left
out of both. On the CPU a third design, "eager ops", is ViewSampler rendering with the eager PyTorch ops of the
other devices instead of its numba kernel (``cassle.augment.render.FUSED_CPU = False``).

    python bench/augment.py [--device cpu|cuda] [--threads 2] [--reps 5] [--stages] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.profiler import ProfilerActivity, profile
from torchvision import transforms

import cassle.augment.render as render
from cassle.augment import ViewSampler
from cassle.augment.functional import NEGLIGIBLE_WEIGHT, to_gray

CASES = (  # name, view size, source sizes (H, W) or "mixed", batch
    ("32px", 32, (32, 32), 256),
    ("224px", 224, (256, 256), 64),
    ("224px-mixed", 224, "mixed", 64),
)


def make_sources(shape: tuple[int, int] | str, batch: int, seed: int) -> list[np.ndarray]:
    """Smooth random RGB uint8 images (H x W x 3); "mixed": ImageNet-like sizes, short side 300..500."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(batch):
        if shape == "mixed":
            short, aspect = rng.integers(300, 501), rng.uniform(1.0, 1.5)
            h, w = (short, round(short * aspect)) if rng.random() < 0.7 else (round(short * aspect), short)
        else:
            h, w = shape
        coarse = rng.integers(0, 256, size=(h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR)))
    return images


class ReferenceDesign:
    """The authors' two-stage pipeline, written straightforwardly (kornia is not installed)."""

    def __init__(self, sampler: ViewSampler) -> None:
        self.s = sampler
        self.per_image = transforms.Compose([
            transforms.RandomResizedCrop(sampler.size, scale=sampler.crop_scale, ratio=sampler.crop_ratio),
            transforms.RandomHorizontalFlip(sampler.flip_p),
            transforms.ToTensor(),
        ])

    def __call__(self, images: list[Image.Image], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([self.per_image(im) for im in images]).to(device)
        color_diff = self.jitter(x)
        self.grayscale(x)
        self.blur(x)
        return x, color_diff

    @staticmethod
    def _subset(n: int, p: float, device: torch.device) -> torch.Tensor:
        return (torch.rand(n, device=device) < p).nonzero().squeeze(1)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        idx = self._subset(len(x), self.s.jitter_p, x.device)
        xs = x[idx]
        n = len(xs)
        before = xs.mean(dim=(2, 3))
        lo, hi = zip(*self.s.jitter_ranges)
        factors = torch.tensor(lo, device=x.device) + torch.rand(n, 4, device=x.device) * (
            torch.tensor(hi, device=x.device) - torch.tensor(lo, device=x.device))
        f = factors.view(n, 4, 1, 1, 1).unbind(1)
        for op in torch.randperm(4).tolist():  # one order for the whole batch
            if op == 0:
                xs = (xs * f[0]).clamp(0, 1)
            elif op == 1:
                mean = to_gray(xs).mean(dim=(1, 2, 3), keepdim=True)
                xs = (f[1] * xs + (1 - f[1]) * mean).clamp(0, 1)
            elif op == 2:
                h, s, v = rgb_to_hsv(xs).unbind(1)
                xs = hsv_to_rgb(torch.stack((h, (s * f[2][:, 0]).clamp(0, 1), v), dim=1))
            else:
                h, s, v = rgb_to_hsv(xs).unbind(1)
                xs = hsv_to_rgb(torch.stack((torch.fmod(h + f[3][:, 0] * 2 * math.pi, 2 * math.pi), s, v), dim=1))
        x[idx] = xs
        diff = torch.zeros(len(x), 3, device=x.device)
        diff[idx] = before - xs.mean(dim=(2, 3))
        return diff

    def grayscale(self, x: torch.Tensor) -> None:
        idx = self._subset(len(x), self.s.gray_p, x.device)
        x[idx] = to_gray(x[idx]).expand(-1, 3, -1, -1)

    def blur(self, x: torch.Tensor) -> None:
        idx = self._subset(len(x), self.s.blur_p, x.device)
        xs = x[idx]
        n, c, h, w = xs.shape
        k = self.s.blur_kernel
        lo, hi = self.s.blur_sigma
        sigma = lo + (hi - lo) * torch.rand(n, 1, device=x.device)
        grid = torch.linspace(-k / 2, k / 2, k, device=x.device)
        kernel = torch.exp(-grid.square() / (2 * sigma.square()))
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        kernel = kernel.masked_fill_(kernel < NEGLIGIBLE_WEIGHT, 0.0).repeat_interleave(c, dim=0)  # as ours
        padded = F.pad(xs.reshape(1, n * c, h, w), [k // 2] * 4, mode="reflect")
        out = F.conv2d(padded, kernel.view(n * c, 1, 1, k), groups=n * c)
        out = F.conv2d(out, kernel.view(n * c, 1, k, 1), groups=n * c)
        x[idx] = out.view(n, c, h, w)


def rgb_to_hsv(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Textbook RGB -> HSV, hue in radians (kornia 0.4 conventions)."""
    maxc, argmax = x.max(dim=1)
    minc = x.min(dim=1).values
    delta = maxc - minc
    s = delta / (maxc + eps)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = ((maxc.unsqueeze(1) - x) / safe.unsqueeze(1)).unbind(1)
    h = torch.where(argmax == 0, bc - gc, torch.where(argmax == 1, 2.0 + rc - bc, 4.0 + gc - rc))
    return torch.stack(((h / 6.0) % 1.0 * (2 * math.pi), s, maxc), dim=1)


_SECTOR_TABLE = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])  # rgb <- (v, p, q, t)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Textbook HSV -> RGB through the six hue sectors (gather from stacked candidates)."""
    h, s, v = hsv.unbind(1)
    h6 = (h / (2 * math.pi)) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    index = _SECTOR_TABLE.to(hsv.device)[:, sector.long() % 6].movedim(0, 1)
    return torch.stack((v, p, q, t), dim=1).gather(1, index)


def timed(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per call of each function; the functions alternate within each repetition, so that load
    from other processes on the machine hits them alike."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + reps):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def eager(sample: Callable[[], object]) -> Callable[[], object]:
    """``sample`` with ViewSampler rendering CPU views by the eager ops of other devices, not its numba kernel."""
    def run() -> object:
        saved, render.FUSED_CPU = render.FUSED_CPU, False
        try:
            return sample()
        finally:
            render.FUSED_CPU = saved
    return run


def stage_ms(sample: Callable[[], object], reps: int) -> dict[str, float]:
    """Milliseconds per batch in each ViewSampler stage (its record_function labels), from torch.profiler."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            sample()
    return {event.key.split(".", 1)[1]: event.cpu_time_total / reps / 1e3
            for event in prof.key_averages() if event.key.startswith("ViewSampler.")}


def run_case(name: str, size: int, shape: tuple[int, int] | str, batch: int, device: torch.device,
             warmup: int, reps: int, stages: bool) -> list[dict[str, object]]:
    arrays = make_sources(shape, batch, seed=0)
    pil = [Image.fromarray(a) for a in arrays]
    tensors = [torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous().to(device) for a in arrays]
    ours_input = torch.stack(tensors) if shape != "mixed" else tensors
    sampler = ViewSampler(size)
    reference = ReferenceDesign(sampler)
    gen = torch.Generator(device=device).manual_seed(0)
    designs = {"reference": lambda: reference(pil, device), "ViewSampler": lambda: sampler(ours_input, generator=gen)}
    if device.type == "cpu":  # the numba renderer against the eager ops that other devices use
        designs["eager ops"] = eager(designs["ViewSampler"])
    seconds = timed(designs, device, warmup, reps)
    source = "mixed" if shape == "mixed" else f"{shape[0]}x{shape[1]}"
    rows = [{"case": name, "size": size, "source": source, "batch": batch, "design": design,
             "samples_per_s": batch / s} for design, s in seconds.items()]
    for row in rows:
        row["ratio"] = row["samples_per_s"] / rows[0]["samples_per_s"]
    if stages:
        for row in rows[1:]:
            row["stage_ms"] = stage_ms(designs[row["design"]], reps)
    return rows


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions; the median is reported")
    parser.add_argument("--cases", nargs="*", default=[c[0] for c in CASES], choices=[c[0] for c in CASES])
    parser.add_argument("--stages", action="store_true", help="also profile ViewSampler's stages (CPU time)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/augment.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]  # other processes skew CPU timings: recorded with the results
    device = torch.device(args.device)
    rows = [row for case in CASES if case[0] in args.cases
            for row in run_case(*case, device=device, warmup=args.warmup, reps=args.reps, stages=args.stages)]
    print(f"{'case':<12} {'source':<8} {'batch':>5} {'design':<12} {'samples/s':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['case']:<12} {r['source']:<8} {r['batch']:>5} {r['design']:<12} {r['samples_per_s']:>10.1f} "
              f"{r['ratio']:>6.2f}")
    for r in rows:
        if "stage_ms" in r:
            print(f"  {r['case']} {r['design']} stages, ms per batch: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items()))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    result = {
        "device": device_name, "device_type": device.type, "torch": torch.__version__, "threads": args.threads,
        "cpu_count": os.cpu_count(), "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "warmup": args.warmup, "reps": args.reps, "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
