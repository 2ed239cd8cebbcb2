"""The pretraining engine: one loop for every framework x variant, resumable bit for bit.

Outputs in `out`: backbone.pt (a plain torchvision state_dict), checkpoint.pt (the final training state),
history.csv (per-step loss, lr, momentum, throughput, wall-clock time) and metrics.json (final figures, the dataset
read, start time + provenance). Resumable state lives in `work` (default `out/work`), outside the declared outputs:
rerunning the same command continues from the newest valid checkpoint there, with the data order, the augmentation
generator and every RNG restored.

Whoever watches a run (the live MLflow mirror, cassle/apps/tracking) is a `cassle.core.observe.Observer` handed to
the Trainer: rank 0 tells it when training starts (at which step), every history row as it is written, the dataset
read, and how training ended (FINISHED, FAILED, KILLED). The engine never imports the observer's code.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cassle.apps.engine.checkpoint import CheckpointManager, load_model_state, model_state, unwrap_model
from cassle.apps.engine.rng import capture_rng, restore_rng
from cassle.augment import ViewSampler
from cassle.config import experiment_hash
from cassle.core.devices import resolve_device
from cassle.core.distributed import DistributedContext, convert_sync_batchnorm, init_from_env, mean_over_ranks
from cassle.core.io import HistoryWriter, atomic_torch_save, write_json
from cassle.core.observe import DatasetUse, NullObserver, Observer, observing
from cassle.core.optim import build_optimizer, scaled_lr
from cassle.core.provenance import provenance, utc_now
from cassle.core.schedules import StepwiseLR, warmup_cosine
from cassle.data import collate_images, describe_dataset, get_dataset, load_pretrain
from cassle.methods import Method, build_method


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops before anything is saved from that step."""


class EpochBatches(Sampler[list[int]]):
    """This process's batches of one epoch: a seeded permutation of the dataset cut into global batches (the last
    partial one dropped), each split evenly over the processes, starting at batch `start`."""

    def __init__(self, size: int, global_batch: int, seed: int, epoch: int, start: int,
                 ctx: DistributedContext) -> None:
        self.size, self.global_batch, self.start, self.ctx = size, global_batch, start, ctx
        self.order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))

    def __len__(self) -> int:
        return self.size // self.global_batch - self.start

    def __iter__(self) -> Iterator[list[int]]:
        local = self.global_batch // self.ctx.world_size
        for batch in range(self.start, self.size // self.global_batch):
            indices = self.order[batch * self.global_batch:(batch + 1) * self.global_batch]
            yield indices[self.ctx.rank * local:(self.ctx.rank + 1) * local].tolist()


@dataclass
class TrainingSchedule:
    """How long training runs and at which peak learning rate, derived from the config and the dataset size."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    lr: float


def training_schedule(config: Mapping[str, Any], dataset_size: int) -> TrainingSchedule:
    batch = config["batch_size"]
    steps_per_epoch = dataset_size // batch
    if steps_per_epoch == 0:
        raise ValueError(f"config key 'batch_size' = {batch} is larger than the dataset {config['dataset']!r} "
                         f"({dataset_size} images): lower batch_size")
    total = config["max_steps"] or config["epochs"] * steps_per_epoch
    warmup = max(0, min(total - 1, round(config["warmup_epochs"] * steps_per_epoch)))  # short runs: cut it
    return TrainingSchedule(steps_per_epoch, total, warmup, scaled_lr(config["base_lr"], batch))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def view_sampler(config: Mapping[str, Any]) -> ViewSampler:
    options = {key.split(".", 1)[1]: value for key, value in config.items() if key.startswith("augment.")}
    return ViewSampler(size=config["image_size"], **{k: tuple(v) if isinstance(v, list) else v
                                                     for k, v in options.items()})


class Trainer:
    """Builds everything from a resolved config and runs (or resumes) the training loop."""

    def __init__(self, config: Mapping[str, Any], out: Path, work: Path | None = None,
                 dataset: Dataset | None = None, progress: bool = True, observer: Observer | None = None) -> None:
        self.config = dict(config)
        self.out, self.work = Path(out), Path(work) if work else Path(out) / "work"
        self.ctx = init_from_env()
        # Each process of a distributed run uses its own device; one process uses the configured one.
        self.device = self.ctx.device if self.ctx.world_size > 1 \
            else resolve_device(config["device"], auto=self.ctx.device)
        if config["batch_size"] % self.ctx.world_size:
            raise ValueError(f"config key 'batch_size' = {config['batch_size']} is not divisible by the "
                             f"{self.ctx.world_size} processes")
        self.hash = experiment_hash(self.config)
        self.progress = progress and self.ctx.rank == 0
        self.observer: Observer = observer if observer is not None and self.ctx.rank == 0 else NullObserver()
        seed_everything(config["seed"])
        self.method: Method = build_method(config)
        if self.ctx.world_size > 1:
            convert_sync_batchnorm(self.method)
        self.method.to(self.device)
        self.channels_last = config["channels_last"] if config["channels_last"] is not None \
            else self.device.type == "cuda"
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.dataset = dataset if dataset is not None else load_pretrain(config["dataset"], config["data_root"])
        self.dataset_use = self.describe_dataset(given=dataset is not None)
        self.schedule = training_schedule(config, len(self.dataset))
        self.optimizer = build_optimizer(config["optimizer"], self.method.optimizer_groups(), self.schedule.lr,
                                         config["weight_decay"], config["momentum"],
                                         trust_coefficient=config["lars.trust_coefficient"], clip=config["lars.clip"])
        self.scheduler = StepwiseLR(self.optimizer, functools.partial(
            warmup_cosine, total_steps=self.schedule.total_steps, warmup_steps=self.schedule.warmup_steps,
            base_lr=self.schedule.lr, warmup_start=self.schedule.lr * config["warmup_start_factor"]))
        self.sampler = view_sampler(config)
        # One augmentation stream for the whole global batch, the same on every process (each renders its slice):
        # the views do not depend on how many processes share the batch.
        self.generators = {"augment": torch.Generator().manual_seed(config["seed"] * 7919)}
        self.model: torch.nn.Module = self.method
        if self.ctx.world_size > 1:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.method, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False, find_unused_parameters=config["variant"] == "augself")
        if config["compile"]:
            self.method.backbone.compile()  # in place: state_dict keys stay those of the backbone
        self.checkpoints = CheckpointManager(self.work, keep=2, config_hash=self.hash)
        self.step = 0
        self.last: dict[str, float] = {}  # the last logged losses: metrics.json's "final", kept across resumes
        self.started_utc: str | None = None  # when training started (its first attempt): kept across resumes

    # ----------------------------------------------------------------------------------------------------------
    def rng_states(self) -> list[dict[str, Any]]:
        """Every process's RNG states (a collective call under DDP), so that each rank resumes its own."""
        mine = capture_rng(self.generators)
        if self.ctx.world_size == 1:
            return [mine]
        everyone: list[Any] = [None] * self.ctx.world_size
        torch.distributed.all_gather_object(everyone, mine)
        return everyone

    def load_state(self, state: Mapping[str, Any]) -> None:
        if len(state["rng"]) != self.ctx.world_size:
            raise ValueError(f"the checkpoint was written by {len(state['rng'])} processes and this run has "
                             f"{self.ctx.world_size}: resume with the same number of processes")
        load_model_state(self.method, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"][self.ctx.rank], self.generators)
        self.step = state["step"]
        self.last = dict(state.get("last", {}))
        self.started_utc = state.get("started_utc")

    def resume(self) -> bool:
        found = self.checkpoints.load_latest(map_location=self.device)
        if found is None:
            return False
        self.load_state(found[0])
        return True

    def save_checkpoint(self) -> None:
        """Write a resumable checkpoint (rank 0) unless the weights went non-finite, which stops the run instead."""
        tensors = [t for t in self.method.state_dict().values() if t.is_floating_point()]
        if not all(torch.isfinite(t).all() for t in tensors):
            raise NonFiniteLossError(self.non_finite_message(f"the weights became non-finite after step {self.step}"))
        rng = self.rng_states()
        if self.ctx.rank == 0:
            state = {"model": model_state(self.method), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "step": self.step, "rng": rng,
                     "last": self.last, "started_utc": self.started_utc}
            self.checkpoints.save(state, self.step)
        if self.ctx.world_size > 1:
            torch.distributed.barrier()

    # ----------------------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[torch.Tensor]:
        """Image batches from the current step on, across epochs."""
        while True:
            epoch, position = divmod(self.step, self.schedule.steps_per_epoch)
            order = EpochBatches(len(self.dataset), self.config["batch_size"], self.config["seed"], epoch,
                                 position, self.ctx)
            workers = self.config["num_workers"]
            loader = DataLoader(self.dataset, batch_sampler=order, num_workers=workers,
                                collate_fn=collate_images, pin_memory=self.device.type == "cuda",
                                persistent_workers=False, prefetch_factor=4 if workers else None)
            for images, _ in loader:
                yield images

    def to_device(self, images: Any) -> Any:
        if isinstance(images, torch.Tensor):
            return images.to(self.device, non_blocking=True)
        return [image.to(self.device, non_blocking=True) for image in images]

    def autocast(self):
        precision = self.config["precision"]
        if precision == "bf16" or (precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def non_finite_message(self, what: str) -> str:
        last = self.checkpoints.latest_step()
        where = f"the last good checkpoint is {self.checkpoints.path(last)} and a rerun resumes from it" \
            if last is not None else "no checkpoint was written yet, so a rerun starts over"
        return f"{what}; {where}. Lower base_lr or check the data and the config"

    def train_step(self, images: Any) -> dict[str, float]:
        images = self.to_device(images)
        batch, local = self.config["batch_size"], self.config["batch_size"] // self.ctx.world_size
        with torch.no_grad():
            (v1, w1), (v2, w2) = (self.sampler(images, generator=self.generators["augment"],
                                               position=self.ctx.rank * local, total=batch) for _ in range(2))
        if self.channels_last:
            v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
        with self.autocast():
            losses = self.model((v1, v2), (w1, w2), self.step, self.schedule.total_steps)
        loss = losses["loss"]
        if not torch.isfinite(loss).item():
            parts = ", ".join(f"{key}={value.item():.4g}" for key, value in losses.items())
            raise NonFiniteLossError(self.non_finite_message(f"the loss became non-finite at step {self.step} "
                                                             f"({parts})"))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {key: value.detach() for key, value in losses.items()}

    def describe_dataset(self, given: bool) -> DatasetUse:
        """The pretraining split as a run input; its root as resolved by the registry when this trainer loaded it."""
        spec = get_dataset(self.config["dataset"])
        root = self.config["data_root"] if given else spec.resolve_root(self.config["data_root"])
        return describe_dataset(self.dataset, spec.name, spec.pretrain_split or "train", root, context="train")

    def history_row(self, losses: Mapping[str, torch.Tensor], elapsed: float, samples: int) -> dict[str, Any]:
        """The history.csv row after a step: also the metrics the observer hears (without step and time)."""
        # each rank's losses are those of its share of the batch: log the global batch's
        means = mean_over_ranks(torch.stack(list(losses.values())).float())
        self.last = dict(zip(losses, means.tolist()))
        row = {"step": self.step, "time": round(time.time(), 3),
               "epoch": round(self.step / self.schedule.steps_per_epoch, 4),
               "lr": self.optimizer.param_groups[0]["lr"], "samples_per_s": samples / elapsed, **self.last}
        if self.method.framework.momentum_encoder:  # the rate the step just taken used
            row["momentum"] = self.method.momentum(self.step - 1, self.schedule.total_steps)
        return row

    def run(self) -> dict[str, Any]:
        """Train to the end (resuming when a checkpoint exists) and write the outputs; returns metrics.json. The
        observer hears the whole of it, and how it ended."""
        with observing(self.observer):
            return self.train()

    def train(self) -> dict[str, Any]:
        resumed = self.resume()
        start_step = self.step
        self.started_utc = self.started_utc or utc_now()  # a checkpoint of an older cassle has none
        self.observer.started(self.step, self.config, since=self.started_utc)
        self.observer.dataset(self.dataset_use)
        history = self.open_history(resumed)
        bar = tqdm(total=self.schedule.total_steps, initial=self.step, desc=f"pretrain {self.config['framework']}-"
                   f"{self.config['variant']}", disable=not self.progress, file=sys.stderr,
                   mininterval=1 if sys.stderr.isatty() else 30, dynamic_ncols=True)
        started, window_start, window_samples = time.perf_counter(), time.perf_counter(), 0
        try:
            batches = self.batches()
            while self.step < self.schedule.total_steps:
                losses = self.train_step(next(batches))
                window_samples += self.config["batch_size"]
                bar.update(1)
                if self.step % self.config["log_every"] == 0 or self.step == self.schedule.total_steps:
                    row = self.history_row(losses, time.perf_counter() - window_start, window_samples)
                    if history is not None:
                        history.append({key: row.get(key, "") for key in history.fieldnames})
                    self.observer.metrics(self.step, {k: v for k, v in row.items() if k not in ("step", "time")})
                    bar.set_postfix(loss=f"{self.last['loss']:.4f}", img_s=f"{row['samples_per_s']:.0f}")
                    window_start, window_samples = time.perf_counter(), 0
                if self.step % self.config["checkpoint_every"] == 0 or self.step == self.schedule.total_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if history is not None:
                history.close()
        seconds = time.perf_counter() - started
        return self.finish(seconds, self.step - start_step, resumed)

    def history_fields(self) -> list[str]:
        keys = ["ssl", "loss"] + [f"augself/{key}" for key in sorted(self.config["augself.weights"])] \
            if self.config["variant"] == "augself" else ["ssl", "loss"]
        momentum = ["momentum"] if self.method.framework.momentum_encoder else []
        return ["step", "time", "epoch", "lr", *momentum, "samples_per_s", *keys]

    def open_history(self, resumed: bool):
        if self.ctx.rank != 0:
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return HistoryWriter(self.out / "history.csv", self.history_fields(),
                             resume_step=self.step if resumed else None)

    def finish(self, seconds: float, steps_run: int, resumed: bool) -> dict[str, Any]:
        metrics = {
            "framework": self.config["framework"], "variant": self.config["variant"],
            "steps": self.step, "epochs": self.step / self.schedule.steps_per_epoch, "final": dict(self.last),
            "samples_per_s": steps_run * self.config["batch_size"] / seconds if steps_run and seconds > 0 else None,
            "resumed": resumed, "world_size": self.ctx.world_size, "datasets": [dataclasses.asdict(self.dataset_use)],
            "experiment_hash": self.hash, "config": self.config,
            "provenance": provenance(self.config, self.config["seed"], started_utc=self.started_utc),
        }
        if self.ctx.rank == 0:
            atomic_torch_save(unwrap_model(self.method).export_backbone(), self.out / "backbone.pt")
            atomic_torch_save({"model": model_state(self.method), "config": self.config, "step": self.step},
                              self.out / "checkpoint.pt")
            write_json(self.out / "metrics.json", metrics)
        return metrics


def pretrain(config: Mapping[str, Any], out: Path | str, work: Path | str | None = None,
             progress: bool = True, observer: Observer | None = None) -> dict[str, Any]:
    """Pretrain (or resume) the run described by a resolved config, told to `observer`; returns what metrics.json
    holds."""
    return Trainer(config, Path(out), Path(work) if work else None, progress=progress, observer=observer).run()

