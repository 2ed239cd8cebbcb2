"""Training throughput of every framework x variant against the bare backbone, measured in the same run.

Each cell times the engine's own training step (`Trainer.train_step`: omega-recording augmentation of two views,
forward, loss, backward, optimiser step) on a fixed in-memory batch of uint8 images, so data loading is excluded
(bench/augment.py and the data benchmarks cover it). The baseline is the bare backbone's forward + backward +
SGD step on two pre-made views per image: the work any two-view SSL method cannot avoid.

Then it measures what live MLflow logging costs: the whole training loop (`Trainer.run`, every step logged:
log_every=1) of MoCo-v2 CASSLE without an observer and with a live run (cassle.apps.tracking.live.LiveRun: a sqlite
store, a batch every second, 5x more often than the default), alternating off/on in the same process. Steps/s come
from history.csv's wall-clock column (one over the median step after `--live-warmup` rows), CPU seconds per step
from the process's CPU time over the whole run (the logging thread, the run's creation and completion included:
robust to a loaded machine, where wall-clock rates swing by 2x between rounds), and the logging thread's share of the
process's CPU time while training ran (its own CPU clock: what logging takes from training at most); MLflow is imported
and the store created before the first round (a job pays that import once, in the background, at its start; the
workflow creates the store before its jobs).

    python bench/pretrain.py                      # CPU: narrow ResNet, 32 px, batch 64, small heads
    python bench/pretrain.py --device cuda --backbone resnet50 --image-size 224 --batch-size 256 --full-heads
    python bench/pretrain.py --frameworks --live-rounds 5   # the live-logging comparison only
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cassle.apps.engine.trainer import Trainer
from cassle.config import resolve
from cassle.core.io import read_csv_rows
from cassle.core.provenance import device_description, git_sha
from cassle.methods import FRAMEWORKS, VARIANTS
from cassle.nets import build_backbone


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of one call of `step` after `warmup` calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bare_backbone_step(args: argparse.Namespace, device: torch.device):
    backbone = build_backbone(args.backbone, args.image_size <= 64, image_size=args.image_size).to(device)
    if device.type == "cuda":
        backbone = backbone.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(backbone.parameters(), lr=1e-3, momentum=0.9)
    views = torch.rand(2 * args.batch_size, 3, args.image_size, args.image_size, device=device)
    if device.type == "cuda":
        views = views.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)

    def step() -> None:
        with autocast:
            loss = backbone(views).float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bench_config(framework: str, variant: str, args: argparse.Namespace, device: torch.device, **keys) -> dict:
    heads = {} if args.full_heads else {"projector.hidden_dim": 512, "projector.out_dim": 128,
                                        "predictor.hidden_dim": 512, "queue_size": 4096}
    return resolve({"framework": framework, "variant": variant, "backbone": args.backbone,
                    "image_size": args.image_size, "batch_size": args.batch_size, "max_steps": 10**6,
                    "device": str(device), "num_workers": 0, **heads, **keys})


def image_dataset(args: argparse.Namespace, batches: int = 1) -> torch.utils.data.TensorDataset:
    images = torch.randint(0, 256, (batches * args.batch_size, 3, args.source_size, args.source_size),
                           dtype=torch.uint8)
    return torch.utils.data.TensorDataset(images, torch.zeros(len(images), dtype=torch.long))


def method_step(framework: str, variant: str, args: argparse.Namespace, device: torch.device, work: Path):
    dataset = image_dataset(args)
    trainer = Trainer(bench_config(framework, variant, args, device), work / f"{framework}-{variant}", dataset=dataset,
                      progress=False)
    return lambda: trainer.train_step(dataset.tensors[0])


def steps_per_s(out: Path, warmup: int) -> float:
    """Training steps per second: one over the median time between two history rows (one per step) after the first
    `warmup` rows (wall-clock column). The median keeps a step slowed by another process on a shared machine out."""
    times = [float(row["time"]) for row in read_csv_rows(out / "history.csv")[warmup:]]
    return 1 / statistics.median(later - earlier for earlier, later in zip(times, times[1:]))


def timed_live_run(*args, **kwargs):
    """A LiveRun that records, when training has ended (its last batch logged, before the run is completed from the
    result folder), its logging thread's CPU seconds (`thread_cpu_s`) and the whole process's (`process_cpu_s`)."""
    from cassle.apps.tracking.live import LiveRun

    class TimedLiveRun(LiveRun):
        thread_cpu_s = process_cpu_s = 0.0

        def _close(self, client, experiment, status):
            self.thread_cpu_s, self.process_cpu_s = time.thread_time(), time.process_time()
            super()._close(client, experiment, status)

    return TimedLiveRun(*args, **kwargs)


def live_logging(args: argparse.Namespace, device: torch.device) -> dict:
    """Steps/s of Trainer.run without and with a live MLflow run, `args.live_rounds` alternating rounds each; and the
    share of the process's CPU time that the logging thread took while training ran (robust to a loaded machine)."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (a job imports it once, in the background)

    from cassle.apps.tracking.store import init_store

    config = bench_config("mocov2", "cassle", args, device, max_steps=args.live_steps, log_every=1,
                          checkpoint_every=10**6)
    dataset = image_dataset(args, batches=4)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}  # process CPU seconds per step, the whole run
    logging_share: list[float] = []  # the logging thread's CPU seconds over the process's, while training ran
    with tempfile.TemporaryDirectory() as work:
        results = Path(work) / "results"
        uri = f"sqlite:///{results}/mlflow.db"
        init_store(uri, "bench")  # as the workflow does before its jobs start (`cassle mlflow init`)
        for index in range(args.live_rounds):
            for mode in ("off", "on"):
                out = results / "pretrain" / f"bench-{mode}-{index}"
                observer = timed_live_run(out, results, uri, "bench", flush_s=1.0) if mode == "on" else None
                start = time.process_time()
                Trainer(config, out, dataset=dataset, progress=False, observer=observer).run()
                cpu[mode].append((time.process_time() - start) / args.live_steps)
                rates[mode].append(steps_per_s(out, args.live_warmup))
                share = ""
                if observer is not None:
                    logging_share.append(observer.thread_cpu_s / (observer.process_cpu_s - start))
                    share = f", logging thread {100 * logging_share[-1]:.2f}% of the CPU while training"
                print(f"live logging {mode:<3} round {index + 1}: {rates[mode][-1]:.2f} steps/s, "
                      f"{cpu[mode][-1]:.3f} CPU s/step{share}", flush=True)
    ratios = [on / off for on, off in zip(rates["on"], rates["off"])]
    cpu_ratios = [on / off for on, off in zip(cpu["on"], cpu["off"])]
    print(f"live logging on / off: steps/s median {statistics.median(ratios):.3f} (rounds: "
          f"{', '.join(f'{ratio:.3f}' for ratio in ratios)}); CPU per step median {statistics.median(cpu_ratios):.3f} "
          f"(rounds: {', '.join(f'{ratio:.3f}' for ratio in cpu_ratios)}); logging thread's share of the CPU while "
          f"training: median {100 * statistics.median(logging_share):.2f}%")
    return {"steps": args.live_steps, "warmup_rows": args.live_warmup, "flush_s": 1.0, "steps_per_s": rates,
            "ratios": ratios, "median_ratio": statistics.median(ratios), "cpu_s_per_step": cpu,
            "cpu_ratios": cpu_ratios, "median_cpu_ratio": statistics.median(cpu_ratios),
            "logging_thread_cpu_share": logging_share}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet_narrow")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-size", type=int, default=None, help="source image size (default: view size)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--full-heads", action="store_true", help="the paper's projector sizes (Table 5)")
    parser.add_argument("--frameworks", nargs="*", default=list(FRAMEWORKS), choices=list(FRAMEWORKS),
                        help="frameworks of the throughput table (none: skip it)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live-steps", type=int, default=40, help="steps of each live-logging round (0: skip)")
    parser.add_argument("--live-rounds", type=int, default=3, help="live-logging rounds (each: off, then on)")
    parser.add_argument("--live-warmup", type=int, default=5, help="history rows left out of each round's rate")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "pretrain.json")
    args = parser.parse_args()
    args.source_size = args.source_size or args.image_size
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    if args.frameworks:
        rows = throughput_table(args, device)
    live = live_logging(args, device) if args.live_steps > 0 else None
    record = {"benchmark": "pretrain", "device": device_description() if device.type == "cuda" else
              f"cpu ({args.threads} threads)", "torch": torch.__version__, "git_sha": git_sha(),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "settings": vars(args) | {
                  "out": str(args.out)}, "rows": rows, "live_logging": live}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


def throughput_table(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Samples/s of every framework x variant's step and of the bare backbone, printed and returned."""
    baseline = args.batch_size / timed(bare_backbone_step(args, device), device, args.warmup, args.repeats)
    rows = [{"framework": "bare backbone", "variant": "-", "samples_per_s": baseline, "ratio": 1.0}]
    print(f"{'framework':<14}{'variant':<9}{'samples/s':>11}{'vs bare':>9}")
    print(f"{'bare backbone':<14}{'-':<9}{baseline:>11.1f}{1.0:>9.2f}")
    with tempfile.TemporaryDirectory() as work:
        for framework in args.frameworks:
            for variant in args.variants:
                seconds = timed(method_step(framework, variant, args, device, Path(work)), device, args.warmup,
                                args.repeats)
                rate = args.batch_size / seconds
                rows.append({"framework": framework, "variant": variant, "samples_per_s": rate,
                             "ratio": rate / baseline})
                print(f"{framework:<14}{variant:<9}{rate:>11.1f}{rate / baseline:>9.2f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
