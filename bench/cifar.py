"""Does every framework learn on real images? config/cifar10.yaml's recipes, scaled to a CPU, on the CIFAR-10 JPEGs.

Each framework x variant of config/cifar10.yaml is pretrained for a short schedule (narrow ResNet, heads / 4, the
recipe's warm-up as the same fraction of the run, a 4096-key MoCo-v2 queue) with the real engine, then probed with
the linear protocol on a seeded subset of CIFAR-10. Per run it records the loss curve (history.csv), the SSL loss
against the framework's chance level (the loss of unrelated views; BYOL and SimSiam have none worth the name: a
collapsed model scores best, so only their probe counts) and the probe's top-1 against the random-init floor (the
same probe on the untrained narrow ResNet, measured in the same run).

Resumable: each run has its folder under --out; a finished run (result.json) is skipped, an interrupted one resumes
from its last checkpoint. Processes on disjoint runs may share --out (the first one writes floor.json; start the
others once it exists):

    python bench/cifar.py --variants vanilla    # its 6 runs, 200 steps of 64 each (the defaults)
    python bench/cifar.py --frameworks mocov2 --variants vanilla --steps 50     # one quick run
    python bench/cifar.py --report              # the table of every finished run (for RESULTS.md), and cifar.json
"""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import Subset

from cassle.apps.engine.trainer import pretrain
from cassle.apps.plan import plan_runs
from cassle.config import resolve
from cassle.core.io import read_csv_rows, read_json, write_json
from cassle.core.provenance import git_sha
from cassle.data import get_dataset
from cassle.evaluate.features import eval_transform, extract_features
from cassle.evaluate.linear import linear_probe
from cassle.evaluate.load import load_backbone
from cassle.methods import FRAMEWORKS, VARIANTS
from cassle.nets import Normalize, build_backbone, input_statistics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = Path(os.environ.get("CASSLE_TEST_DATA", Path.home() / ".cache" / "cassle" / "test-data")) / \
    "cifar10-jpeg"
PROBE_PENALTIES = tuple(10.0 ** e for e in range(-2, 5))
HEAD_SCALE = 4  # the narrow ResNet has 128 features, ResNet-18 512


def chance_level(config: dict[str, Any]) -> float | None:
    """The SSL loss of views that carry no information about each other (None where collapse scores lower)."""
    n, framework = config["batch_size"], config["framework"]
    if framework == "simclr":  # NT-Xent: 1 positive among 2N - 1 candidates
        return math.log(2 * n - 1)
    if framework in ("mocov2", "mocov1"):  # 1 key among K + 1
        return math.log(config["queue_size"] + 1)
    if framework == "mocov3":  # two directions, each CE over N keys x 2T
        return 2 * 2 * config["temperature"] * math.log(n)
    if framework == "barlow":  # c_ii ~ 0, E c_ij^2 = 1/N for standardised independent columns
        d = config["projector.out_dim"]
        return d + config["lambd"] * d * (d - 1) / n
    return None


def learned(config: dict[str, Any], ssl: float, chance: float | None) -> bool:
    """'Well below chance': a nat of cross-entropy below it for the contrastive losses (MoCo-v3's loss is 4T times
    the mean of its two cross-entropies), half of it for Barlow Twins."""
    if chance is None:
        return True
    if config["framework"] == "barlow":
        return ssl < chance / 2
    nat = 4 * config["temperature"] if config["framework"] == "mocov3" else 1.0
    return ssl < chance - nat


def bench_config(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """A recipe of config/cifar10.yaml cut down to the CPU run."""
    recipe = resolve(raw)
    heads = FRAMEWORKS[recipe["framework"]].heads
    sizes = {}
    if heads is not None:
        sizes["projector.hidden_dim"] = (recipe["projector.hidden_dim"] or heads.projector.hidden_dim) // HEAD_SCALE
        sizes["projector.out_dim"] = (recipe["projector.out_dim"] or heads.projector.out_dim) // HEAD_SCALE
        if heads.predictor is not None:
            sizes["predictor.hidden_dim"] = (recipe["predictor.hidden_dim"] or heads.predictor.hidden_dim) \
                // HEAD_SCALE
    steps_per_epoch = 50000 // args.batch_size
    warmup_fraction = recipe["warmup_epochs"] / recipe["epochs"]
    return resolve({**raw, **sizes, "backbone": "resnet_narrow", "data_root": str(args.data_root),
                    "epochs": None, "max_steps": args.steps, "batch_size": args.batch_size,
                    "warmup_epochs": warmup_fraction * args.steps / steps_per_epoch,
                    "queue_size": args.queue_size, "checkpoint_every": 50, "log_every": 10,
                    "num_workers": args.workers, "device": args.device})


def probe_splits(args: argparse.Namespace) -> dict[str, Subset]:
    """Seeded subsets of CIFAR-10's train / val / test at 32 px (the linear protocol's transform)."""
    spec, transform = get_dataset("cifar10"), eval_transform(32)
    sizes = {"train": args.probe_train, "val": args.probe_val, "test": args.probe_test}
    splits = {}
    for i, (split, size) in enumerate(sizes.items()):
        data = spec.load(args.data_root, split, transform)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(i))
        splits[split] = Subset(data, order[:size].tolist())
    return splits


def probe(backbone: torch.nn.Module, splits: dict[str, Subset], args: argparse.Namespace) -> dict[str, Any]:
    normalize = Normalize(*input_statistics("cifar10"))
    features = {name: extract_features(backbone, data, 512, args.device, normalize=normalize, progress=False)
                for name, data in splits.items()}
    result = linear_probe(features["train"], features["val"], features["test"], "top1",
                          penalties=PROBE_PENALTIES, device=args.device, progress=False)
    return {"top1": result["test"], "penalty": result["penalty"]}


def floor(splits: dict[str, Subset], args: argparse.Namespace) -> dict[str, Any]:
    """The probe on the untrained narrow ResNet (seed 0, the runs' init), cached in --out."""
    path = args.out / "floor.json"
    if path.is_file():
        return read_json(path)
    torch.manual_seed(0)
    backbone = build_backbone("resnet_narrow", cifar_stem=True, image_size=32)
    result = {**probe(backbone, splits, args), "backbone": "resnet_narrow (random init, seed 0)"}
    write_json(path, result)
    return result


def loss_curve(run_dir: Path) -> list[list[float]]:
    """[step, ssl loss] of every history row."""
    return [[int(row["step"]), float(row["ssl"])] for row in read_csv_rows(run_dir / "history.csv")]


def bench_run(name: str, config: dict[str, Any], splits: dict[str, Subset], args: argparse.Namespace) -> dict:
    run_dir = args.out / name
    if (run_dir / "result.json").is_file():
        return read_json(run_dir / "result.json")
    start = time.perf_counter()
    pretrain(config, run_dir, progress=False)
    train_s = time.perf_counter() - start
    backbone, _ = load_backbone(run_dir, device=args.device)
    curve = loss_curve(run_dir)
    final = sum(loss for _, loss in curve[-3:]) / len(curve[-3:])  # the last 30 steps, less noisy than one row
    chance = chance_level(config)
    result = {"framework": config["framework"], "variant": config["variant"], "steps": config["max_steps"],
              "curve": curve, "ssl_first": curve[0][1], "ssl_final": final, "chance": chance,
              "below_chance": learned(config, final, chance), "probe": probe(backbone, splits, args),
              "train_s": train_s, "config": config}
    write_json(run_dir / "result.json", result)
    return result


def markdown(results: list[dict], floor_result: dict) -> str:
    """The RESULTS.md table: one row per run."""
    lines = [f"Random-init floor (narrow ResNet, same probe): top-1 {floor_result['top1']:.3f}.", "",
             "| framework | variant | SSL loss: step 10 -> 50 -> 100 -> 150 -> last 3 rows | chance | probe top-1 | "
             "learns |", "|---|---|---|---|---|---|"]
    for r in results:
        at = dict((int(step), loss) for step, loss in r["curve"])
        points = " -> ".join(f"{at[s]:.3g}" for s in (10, 50, 100, 150) if s in at) + f" -> {r['ssl_final']:.3g}"
        chance = "-" if r["chance"] is None else f"{r['chance']:.3g}"
        ok = learned(r["config"], r["ssl_final"], r["chance"]) and r["probe"]["top1"] > floor_result["top1"] + 0.02
        lines.append(f"| {r['framework']} | {r['variant']} | {points} | {chance} | {r['probe']['top1']:.3f} | "
                     f"{'yes' if ok else '**no**'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "cifar10.yaml")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT, help="CIFAR-10 JPEG class folders")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--queue-size", type=int, default=4096)
    parser.add_argument("--frameworks", nargs="+", default=None, choices=list(FRAMEWORKS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--probe-train", type=int, default=3000)
    parser.add_argument("--probe-val", type=int, default=1000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes of the pretraining runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for a quick look on a GPU")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cifar")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.data_root / "train").is_dir():
        parser.error(f"no CIFAR-10 JPEG folders at {args.data_root} (run the tests once to extract "
                     "../shared/data/cifar10-jpeg.tar.gz there, or pass --data-root)")
    runs = plan_runs(yaml.safe_load(args.config.read_text()))
    chosen = [(run.config["framework"], run.config["variant"], run.overrides) for run in runs.values()
              if (args.frameworks is None or run.config["framework"] in args.frameworks)
              and run.config["variant"] in args.variants]
    chosen.sort(key=lambda item: list(VARIANTS).index(item[1]))  # every framework's vanilla run first
    splits = probe_splits(args)
    floor_result = floor(splits, args)
    results = []
    for framework, variant, raw in chosen:
        name = f"{framework}-{variant}"
        if args.report:
            if (args.out / name / "result.json").is_file():
                results.append(read_json(args.out / name / "result.json"))
            continue
        result = bench_run(name, bench_config(raw, args), splits, args)
        results.append(result)
        print(f"{name}: ssl {result['ssl_first']:.3f} -> {result['ssl_final']:.3f} (chance {result['chance']}), "
              f"probe {result['probe']['top1']:.3f} (floor {floor_result['top1']:.3f}), "
              f"{result['train_s']:.0f} s", flush=True)
    table = markdown(results, floor_result)
    print(table)
    write_json(args.out.parent / "cifar.json", {
        "benchmark": "cifar", "git_sha": git_sha(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: str(v) for k, v in vars(args).items()}, "floor": floor_result,
        "runs": [{k: v for k, v in r.items() if k != "config"} for r in results]})


if __name__ == "__main__":
    main()
