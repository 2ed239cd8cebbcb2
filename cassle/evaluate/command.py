"""The command-line side shared by every `cassle eval TASK`: the common options, the backbone they name, and the
metrics.json every task writes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cassle.core.devices import resolve_device
from cassle.core.io import write_json
from cassle.core.provenance import provenance, utc_now
from cassle.core.threads import available_cpus
from cassle.evaluate.load import load_backbone
from cassle.nets import Backbone, resnet_names

SOURCE_FIELDS = ("kind", "path", "sha256", "arch", "cifar_stem", "image_size")
MAX_DEFAULT_WORKERS = 16


def add_common_arguments(parser: argparse.ArgumentParser, dataset: str | None = None,
                         source_required: bool = True) -> None:
    """The options every `cassle eval TASK` takes; `dataset` is the default of --dataset (None: required when the
    source is). `source_required=False` makes SOURCE optional (`cassle eval linear --features`)."""
    parser.add_argument("source", type=Path, nargs=None if source_required else "?", default=None,
                        help="pretraining run folder, or a .pt file with a torchvision ResNet state_dict (then give "
                        "--arch)")
    parser.add_argument("--arch", choices=resnet_names(), default=None,
                        help="architecture of a state_dict source (not needed for run folders)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="evaluation image size (default: the run's pretraining size; 224, or 32 for a "
                        "CIFAR-stem state_dict)")
    parser.add_argument("--dataset", default=dataset, required=dataset is None and source_required,
                        help="registered downstream dataset" + (f" (default: {dataset})" if dataset else ""))
    parser.add_argument("--data-root", type=Path, default=None, help="folder of the dataset (not needed for "
                        "synthetic)")
    parser.add_argument("--out", type=Path, required=True, help="output folder: metrics.json, features/, figures")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: %(default)s)")
    cpus = available_cpus()
    parser.add_argument("--workers", type=int, default=default_workers(cpus),
                        help="data-loading worker processes (default: one per CPU this job was given beyond the "
                        f"first, at most {MAX_DEFAULT_WORKERS}: %(default)s here)")
    parser.add_argument("--threads", type=int, default=cpus,
                        help="torch threads of the evaluation (default: the CPUs this job was given: "
                        "SLURM_CPUS_PER_TASK, else the cgroup's CPU quota, else the affinity mask; %(default)s here)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    parser.add_argument("--max-images", type=int, default=None,
                        help="use only the first N images of each split (quick runs; default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def default_workers(cpus: int) -> int:
    """DataLoader workers when --workers is not given: the CPUs beyond the main process's, at most 16."""
    return max(0, min(cpus - 1, MAX_DEFAULT_WORKERS))


def set_threads(args: argparse.Namespace) -> None:
    """torch's intra-op threads for this evaluation: --threads (default: the CPUs the job was given)."""
    if args.threads < 1:
        raise ValueError(f"--threads must be a positive number of threads, got {args.threads}")
    torch.set_num_threads(args.threads)


def backbone_from_args(args: argparse.Namespace) -> tuple[Backbone, dict[str, Any], torch.device]:
    """load_backbone for the common options; returns (backbone, source info, device). Notes when the evaluation
    started (``args.started_utc``, for metrics.json's provenance) unless that is noted already."""
    if getattr(args, "started_utc", None) is None:
        args.started_utc = utc_now()
    device = resolve_device(args.device)
    backbone, info = load_backbone(args.source, args.arch, device, args.image_size)
    return backbone, info, device


def eval_record(args: argparse.Namespace, task: str, metrics: Mapping[str, Any], info: Mapping[str, Any],
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What OUT/metrics.json holds: task, dataset, metrics, source (path, kind, sha256, arch, image size), options,
    provenance (with the evaluation's start, `args.started_utc`, when known). The provenance's config hash covers the
    source's weights, the dataset and the task `options`."""
    eval_config = {"task": task, "dataset": args.dataset, "source_sha256": info["sha256"],
                   "image_size": info["image_size"], "max_images": args.max_images, **(options or {})}
    return {"task": task, "dataset": args.dataset, "metrics": dict(metrics),
            "source": {key: info[key] for key in SOURCE_FIELDS}, "options": dict(options or {}),
            "provenance": provenance(eval_config, args.seed, started_utc=getattr(args, "started_utc", None))}


def write_eval_metrics(args: argparse.Namespace, task: str, metrics: Mapping[str, Any], info: Mapping[str, Any],
                       options: Mapping[str, Any] | None = None) -> Path:
    """Write OUT/metrics.json (`eval_record`) atomically; returns its path."""
    path = Path(args.out) / "metrics.json"
    write_json(path, eval_record(args, task, metrics, info, options))
    return path
