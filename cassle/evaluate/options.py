"""The options of every `cassle eval TASK`, without torch: `add_common_arguments` and one function per task, named
after it (`linear(parser)` for `cassle eval linear`), which `cassle.evaluate.task_parser` calls. The planner and
`cassle launch --check-only` parse eval options only to reject bad ones, so this module stays light."""

from __future__ import annotations

import argparse
from pathlib import Path

from cassle.core.threads import available_cpus
from cassle.evaluate.settings import (
    AUGMENTATIONS,
    BASE_BATCH,
    BASE_LR,
    CORRUPTIONS,
    DEFAULT_AUGMENTATIONS,
    DEFAULT_PAIRS,
    ITERATIONS,
    LR_STEPS,
    MAX_SIZE,
    METRICS,
    ROIS_PER_IMAGE,
    SEVERITIES,
    TEMPERATURE,
    TEST_SIZE,
    TRAIN_SIZES,
    WARMUP_FACTOR,
    WARMUP_ITERS,
)
from cassle.nets import resnet_names

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


def linear(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval linear` (the common `cassle eval` options, SOURCE optional, plus --features)."""
    add_common_arguments(parser, source_required=False)
    parser.add_argument("--features", type=Path, default=None,
                        help="evaluate precomputed features DIR/{train,val,test}.pt (each {'x': N x D, 'y': "
                        "targets}) instead of extracting them from SOURCE")
    parser.add_argument("--metric", choices=METRICS, default=None,
                        help="score reported on test (default: the dataset's; required with --features)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the probe (default: float32)")
    parser.add_argument("--no-warm-start", dest="warm_start", action="store_false",
                        help="start every penalty of the sweep from zero instead of the previous solution")


def rotation(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval rotation`."""
    add_common_arguments(parser)
    parser.add_argument("--penalties", type=float, nargs="+", default=None,
                        help="L2 penalties of the sweep (default: the authors' 45 values in [1e-6, 1e5])")


def corruption(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval corruption`."""
    add_common_arguments(parser, dataset="imagenet100")
    parser.add_argument("--corruptions", nargs="+", choices=CORRUPTIONS, default=list(CORRUPTIONS),
                        help="ImageNet-C weather corruptions to test (default: all four of Table 8)")
    parser.add_argument("--severities", nargs="+", type=int, choices=SEVERITIES, default=list(SEVERITIES),
                        help="severities 1-5 to test (default: all)")
    parser.add_argument("--penalties", nargs="+", type=float, default=None,
                        help="L2 penalty grid of the clean linear probe (default: the authors' 45 values in "
                        "[1e-6, 1e5])")


def sensitivity(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval sensitivity`."""
    add_common_arguments(parser, dataset="imagenet100")
    parser.add_argument("--split", default="test", help="dataset split of the images (default: test)")
    parser.add_argument("--augmentations", nargs="+", choices=AUGMENTATIONS, default=list(DEFAULT_AUGMENTATIONS),
                        help="augmentations to measure, each applied alone with p=1 (default: the five of Fig 6)")
    parser.add_argument("--temperature", type=float, default=TEMPERATURE, help="InfoNCE temperature (default 0.2)")
    parser.add_argument("--label", default=None, help="name of this source in figures (default: framework and "
                        "variant of the run, or the file name)")
    parser.add_argument("--compare", nargs="+", type=Path, default=[],
                        help="--out folders (or metrics.json files) of earlier sensitivity runs to draw as extra "
                        "lines in the figure (Figs 6, 8-10)")


def conditioning(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval conditioning`."""
    add_common_arguments(parser, dataset="imagenet100")
    parser.add_argument("--split", default="test", help="dataset split of the images (default: test)")
    parser.add_argument("--num-pairs", type=int, default=DEFAULT_PAIRS,
                        help=f"number of positive pairs (default: {DEFAULT_PAIRS}, as the paper)")


def retrieval(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval retrieval`."""
    add_common_arguments(parser)
    parser.add_argument("--split", default="test", help="split searched and drawn (default: test)")
    parser.add_argument("--k", type=int, default=4, help="neighbours shown per query (default: 4, as Fig. 5)")
    parser.add_argument("--queries", type=int, nargs="+", default=None,
                        help="indices of the figure's query images in the split (default: seeded random ones)")
    parser.add_argument("--num-queries", type=int, default=10,
                        help="number of random queries when --queries is not given (default: 10)")
    parser.add_argument("--recall-k", type=int, nargs="+", default=[1, 5, 10],
                        help="k values of recall@k (default: 1 5 10)")


def detection(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval detection`: the common evaluation options plus the detector's training recipe."""
    add_common_arguments(parser, dataset="voc2007")
    parser.set_defaults(batch_size=BASE_BATCH)
    recipe = parser.add_argument_group(
        "detector training", f"Defaults follow detectron2's MoCo VOC R50-C4 recipe; --batch-size (images per "
        f"training step and per test forward pass) defaults to {BASE_BATCH} here.")
    recipe.add_argument("--iterations", type=int, default=ITERATIONS,
                        help=f"SGD iterations (default: {ITERATIONS})")
    recipe.add_argument("--lr", type=float, default=None,
                        help=f"base learning rate (default: {BASE_LR} x batch size / {BASE_BATCH}, linear scaling)")
    recipe.add_argument("--lr-steps", type=int, nargs="+", default=None,
                        help="iterations at which the learning rate drops x0.1 (default: 3/4 and 11/12 of "
                        f"--iterations, i.e. {LR_STEPS[0]} {LR_STEPS[1]} for {ITERATIONS})")
    recipe.add_argument("--warmup-iters", type=int, default=WARMUP_ITERS,
                        help=f"linear warm-up iterations from {WARMUP_FACTOR} x lr (default: {WARMUP_ITERS})")
    recipe.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    recipe.add_argument("--weight-decay", type=float, default=1e-4,
                        help="weight decay, not applied to norm layers (default: 1e-4)")
    recipe.add_argument("--train-sizes", type=int, nargs="+", default=list(TRAIN_SIZES),
                        help="shorter-side sizes drawn at random for each training image (default: 480 512 ... 800)")
    recipe.add_argument("--test-size", type=int, default=TEST_SIZE,
                        help=f"shorter-side size at test time (default: {TEST_SIZE})")
    recipe.add_argument("--max-size", type=int, default=MAX_SIZE,
                        help=f"upper bound of the longer side (default: {MAX_SIZE})")
    recipe.add_argument("--rois-per-image", type=int, default=ROIS_PER_IMAGE,
                        help=f"proposals sampled per training image for the box head (default: {ROIS_PER_IMAGE})")
    recipe.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="bfloat16 autocast on CUDA (ignored on CPU; default: on)")
    recipe.add_argument("--eleven-point", action="store_true",
                        help="VOC2007 11-point AP (detectron2's VOC07 setting) instead of all-point interpolation")


def fewshot(parser: argparse.ArgumentParser) -> None:
    """Options of `cassle eval fewshot`."""
    add_common_arguments(parser)
    parser.add_argument("--splits", nargs="+", default=["trainval", "test"],
                        help="splits whose images form the episode pool (default: trainval test, i.e. all images)")
    parser.add_argument("--ways", type=int, default=5, help="classes per episode (default: 5)")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5],
                        help="support images per class, one setting per value (default: 1 5)")
    parser.add_argument("--queries", type=int, default=16, help="query images per class (default: 16)")
    parser.add_argument("--tasks", type=int, default=2000, help="episodes per setting (default: 2000)")
