"""Which runs belong to which table row, decided from their configs (never from folder names).

A *setup* is (pretraining dataset, backbone); every table and figure is built per setup. Within a setup, a run has
the *default* configuration when the keys that the ablations vary equal their defaults:
- CASSLE runs: `conditioning.omega_keys` (all six keys, compared as a set), `conditioning.injection` (the
  framework's default: cat, add for MoCo-v1), and the augmentation encoder size (depth, width): the most common
  one among the setup's CASSLE runs, ties going to cassle.config's default (6 x 64);
- AugSelf runs: `augself.weights` (crop and color, 0.5 each);
- vanilla runs: always default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from cassle.apps.report.collect import EvalResult, Failure, PretrainRun, Results
from cassle.apps.report.paper import paper_epochs
from cassle.config import FIELDS
from cassle.data import DATASETS
from cassle.methods import FRAMEWORKS, framework_defaults

ABLATION_FRAMEWORK = "mocov2"                   # Table 4, Figs 5-8: the paper's MoCo-v2
NO_PROJECTOR_FRAMEWORK = "mocov1"               # Table 10, Fig 10
PAPER_ONLY_DATASETS = {"fc100": "FC100", "plant_disease": "Plant"}  # in the paper's tables, not in cassle.data


def framework_label(framework: str) -> str:
    """A framework's name in the paper's tables (its label in cassle.methods.frameworks); the name itself when not registered."""
    return FRAMEWORKS[framework].label if framework in FRAMEWORKS else framework


def dataset_label(dataset: str) -> str:
    """A dataset's column header in the paper's tables."""
    return DATASETS[dataset].short if dataset in DATASETS else PAPER_ONLY_DATASETS.get(dataset, dataset)


@lru_cache(maxsize=None)
def default(key: str, framework: str) -> Any:
    """The default of config `key` for `framework`: the framework's own (cassle.methods), else cassle.config's."""
    own = framework_defaults(framework) if framework in FRAMEWORKS else {}
    return own.get(key, FIELDS[key].default)


def setting(run: PretrainRun, key: str) -> Any:
    """`key` of the run's config, its default when absent or None."""
    value = run.config.get(key)
    return default(key, run.framework) if value is None else value


def encoder_size(run: PretrainRun) -> tuple[int, int]:
    """(depth, width) of a CASSLE run's augmentation encoder."""
    return int(setting(run, "conditioning.encoder_depth")), int(setting(run, "conditioning.encoder_width"))


def omega_keys(run: PretrainRun) -> frozenset[str]:
    return frozenset(setting(run, "conditioning.omega_keys"))


def injection(run: PretrainRun) -> str:
    return setting(run, "conditioning.injection")


def augself_keys(run: PretrainRun) -> frozenset[str]:
    """The omega keys the AugSelf heads predict."""
    return frozenset(setting(run, "augself.weights"))


def target_epochs(run: PretrainRun) -> float | None:
    """The epochs `run` should have trained for to match the paper: the paper's Table 5 for its framework, else
    its own configured epochs."""
    epochs = paper_epochs(run.framework)
    return epochs if epochs is not None else (float(run.config["epochs"]) if run.config.get("epochs") else None)


def _default_encoder(runs: Iterable[PretrainRun]) -> tuple[int, int]:
    """The most common encoder size of the CASSLE runs; ties (and no run) go to cassle.config's default."""
    fallback = (default("conditioning.encoder_depth", ""), default("conditioning.encoder_width", ""))
    counts = Counter(encoder_size(run) for run in runs if run.variant == "cassle")
    if not counts:
        return fallback
    best = max(counts.values())
    tied = sorted(size for size, count in counts.items() if count == best)
    return fallback if fallback in tied else tied[0]


@dataclass(frozen=True)
class Setup:
    """(pretraining dataset, backbone)."""

    dataset: str
    backbone: str

    @property
    def name(self) -> str:
        return f"{self.dataset}_{self.backbone}"

    @property
    def key(self) -> tuple[str, str]:
        return self.dataset, self.backbone

    def __str__(self) -> str:
        return f"{self.dataset}/{self.backbone}"


@dataclass
class SetupResults:
    """The runs of one setup, their evaluations, and the external checkpoints evaluated with its backbone."""

    setup: Setup
    runs: list[PretrainRun]
    evals: list[EvalResult]
    externals: list[EvalResult]
    failures: list[Failure] = field(default_factory=list)
    problems: list[tuple[EvalResult, str]] = field(default_factory=list)   # results lacking a metric

    @cached_property
    def encoder(self) -> tuple[int, int]:
        """The default (depth, width) of this setup's augmentation encoders."""
        return _default_encoder(self.runs)

    def deviations(self, run: PretrainRun) -> dict[str, Any]:
        """The ablation keys where `run` differs from the default configuration (empty: a default run)."""
        out: dict[str, Any] = {}
        if run.variant == "cassle":
            if omega_keys(run) != frozenset(default("conditioning.omega_keys", run.framework)):
                out["omega_keys"] = omega_keys(run)
            if injection(run) != default("conditioning.injection", run.framework):
                out["injection"] = injection(run)
            if encoder_size(run) != self.encoder:
                out["encoder"] = encoder_size(run)
        elif run.variant == "augself" and augself_keys(run) != frozenset(default("augself.weights", run.framework)):
            out["augself_keys"] = augself_keys(run)
        return out

    def ablation(self, key: str, value: Callable[[PretrainRun], Any],
                 keep: Callable[[PretrainRun], bool] = lambda run: True) -> dict[Any, list[PretrainRun]]:
        """The ablation framework's CASSLE runs that differ from the default at most in `key` (a key of
        `deviations`) and pass `keep`, grouped by `value`."""
        groups: dict[Any, list[PretrainRun]] = {}
        for run in self.runs:
            if run.framework == ABLATION_FRAMEWORK and run.variant == "cassle" and set(self.deviations(run)) <= {key} \
                    and keep(run):
                groups.setdefault(value(run), []).append(run)
        return groups

    def runs_where(self, framework: str, variant: str, **deviation: Any) -> list[PretrainRun]:
        """Runs of `framework`/`variant` whose deviations from the default are exactly `deviation`."""
        return [run for run in self.runs if run.framework == framework and run.variant == variant
                and self.deviations(run) == deviation]

    def externals_by_name(self, task: str) -> dict[str, list[EvalResult]]:
        """This setup's external-checkpoint results of `task`, by the checkpoint's name."""
        named: dict[str, list[EvalResult]] = {}
        for result in self.externals:
            if result.task == task:
                named.setdefault(result.external_name, []).append(result)
        return dict(sorted(named.items()))

    def frameworks(self) -> list[str]:
        """Frameworks with runs in this setup, in the registry's (the paper's) order, then the others alphabetically."""
        present = {run.framework for run in self.runs}
        order = {name: i for i, name in enumerate(FRAMEWORKS)}
        return sorted(present, key=lambda name: (order.get(name, len(order)), name))

    def evals_of(self, runs: Iterable[PretrainRun], task: str) -> list[EvalResult]:
        """The `task` results of these runs."""
        names = {run.name for run in runs}
        return [result for result in self.evals if result.task == task and result.run is not None
                and result.run.name in names]

    def scale_note(self) -> str | None:
        """Why this setup's numbers cannot be compared with the paper's, or None when they can."""
        reasons = []
        if self.setup.dataset.startswith("synthetic"):
            reasons.append("pretrained on the synthetic dataset")
        short = [run for run in self.runs if run.trained_epochs is not None
                 and (epochs := target_epochs(run)) is not None and run.trained_epochs < epochs - 1e-6]
        if short:
            reasons.append(f"{len(short)} run(s) trained fewer epochs than the paper's Table 5 (or than configured)")
        return "demo-scale: not comparable to the paper (" + "; ".join(reasons) + ")" if reasons else None


def split_setups(results: Results) -> list[SetupResults]:
    """One SetupResults per (dataset, backbone) of the collected runs; external checkpoints join every setup
    whose backbone is their architecture."""
    setups: dict[Setup, SetupResults] = {}
    for run in results.runs:
        setup = Setup(*run.setup)
        setups.setdefault(setup, SetupResults(setup, [], [], [])).runs.append(run)
    for result in results.evals:
        if result.run is not None:
            setups[Setup(*result.run.setup)].evals.append(result)
        else:
            for ctx in setups.values():
                if result.source.get("arch") == ctx.setup.backbone:
                    ctx.externals.append(result)
    setup_of = {run.name: Setup(*run.setup) for run in results.runs}
    for failure in results.failures:
        if failure.run_name in setup_of:
            setups[setup_of[failure.run_name]].failures.append(failure)
    return sorted(setups.values(), key=lambda ctx: ctx.setup.name)
