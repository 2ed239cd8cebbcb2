"""The run-time side shared by every `cassle eval TASK`: its torch threads, the backbone its common options
(options.py) name, and the metrics.json every task writes."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cassle.core.devices import resolve_device
from cassle.core.io import write_json
from cassle.core.provenance import provenance, utc_now
from cassle.evaluate.load import load_backbone
from cassle.nets import Backbone

SOURCE_FIELDS = ("kind", "path", "sha256", "arch", "cifar_stem", "image_size")


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
