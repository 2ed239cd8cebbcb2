"""The paper's figures (3, 5-10) drawn from one setup's results, as PNG and PDF sized for a paper page.

Every figure uses what the evaluations saved: sensitivity metrics (`infonce/<aug>/<stage>`) for Figs 6, 8, 9, 10,
the conditioning histograms (histogram.json; else the summary: means and fraction) for Fig 3, the retrieval grids each eval drew for Fig 5, and the
pretraining history.csv for Fig 7. Several seeds of one method are averaged.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cassle.apps.report.collect import EvalResult, PretrainRun
from cassle.apps.report.select import (
    ABLATION_FRAMEWORK,
    NO_PROJECTOR_FRAMEWORK,
    SetupResults,
    encoder_size,
    framework_label,
)
from cassle.apps.report.tables import method_label
from cassle.core.io import atomic_savefig, read_json
from cassle.evaluate import CONDITIONING_HISTOGRAM
from cassle.methods import VARIANTS

PAGE_WIDTH = 7.0            # inches: a two-column paper's text width
FONT_SIZE = 8
TITLE_CHARS = 100           # a suptitle wider than this is wrapped, so that it does not widen the figure
DPI = 150                   # PNG resolution: a full-width figure is ~1000 px wide
AUGMENTATION_ORDER = ("crop", "color", "flip", "grayscale", "blur")
FEATURE_STAGE = "pooled"    # the feature extractor's output (Fig 8)
FORMATS = ("png", "pdf")
Sensitivity = dict[str, dict[str, float]]   # augmentation -> stage -> mean InfoNCE
Series = tuple[str, list[PretrainRun], list[EvalResult]]   # (label, runs, their results)


@dataclass
class Figure:
    """One drawn figure: what it shows and the runs and results it was drawn from."""

    name: str                       # fig3, fig5, ...
    caption: str
    ctx: SetupResults
    runs: list[PretrainRun] = field(default_factory=list)
    results: list[EvalResult] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return f"{self.name}_{self.ctx.setup.name}"

    @property
    def title(self) -> str:
        return f"Figure {self.name[3:]}"

    @classmethod
    def of(cls, name: str, caption: str, ctx: SetupResults, series: Sequence[Series]) -> Figure:
        """A figure drawn from `series`, recording their runs and results."""
        return cls(name, caption, ctx, [run for _, runs, _ in series for run in runs],
                   [result for _, _, results in series for result in results])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT_SIZE, "axes.titlesize": FONT_SIZE + 1, "legend.fontsize": FONT_SIZE - 1})
    return plt


def _save(fig: Any, figure: Figure, out: Path) -> Figure:
    plt = _pyplot()
    for fmt in FORMATS:
        path = out / f"{figure.stem}.{fmt}"
        atomic_savefig(fig, path, bbox_inches="tight", dpi=DPI)
        figure.files.append(path)
    plt.close(fig)
    return figure


def _stage_key(stage: str) -> tuple[int, int, str]:
    if stage in ("stem", "patch_embed"):
        return 0, 0, stage
    if match := re.fullmatch(r"(?:layer|block)(\d+)", stage):
        return 1, int(match.group(1)), stage
    return (2 if stage == FEATURE_STAGE else 3 if stage == "projector" else 4), 0, stage


def _ordered(names: Iterable[str], order: tuple[str, ...]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in order if n in names] + sorted(n for n in names if n not in order)


def mean_sensitivity(results: Iterable[EvalResult]) -> Sensitivity:
    """Mean over results (seeds) of every `infonce/<augmentation>/<stage>` metric."""
    sums: dict[tuple[str, str], list[float]] = {}
    for result in results:
        for key, value in result.metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "infonce" and isinstance(value, (int, float)):
                sums.setdefault((parts[1], parts[2]), []).append(float(value))
    out: Sensitivity = {}
    for (aug, stage), values in sums.items():
        out.setdefault(aug, {})[stage] = sum(values) / len(values)
    return out


def _series_of(ctx: SetupResults, framework: str, variants: Iterable[str], task: str) -> list[Series]:
    """(label, runs, results) of the default runs of `framework` per variant that have `task` results."""
    out = []
    for variant in variants:
        runs = ctx.runs_where(framework, variant)
        results = ctx.evals_of(runs, task)
        if results:
            out.append((method_label(framework, variant), runs, results))
    return out


def _stage_lines(series: Mapping[str, Sensitivity], title: str) -> Any:
    """InfoNCE against stage, one panel per augmentation, one line per series."""
    plt = _pyplot()
    augmentations = _ordered((aug for s in series.values() for aug in s), AUGMENTATION_ORDER)
    columns = min(len(augmentations), 5)
    rows = -(-len(augmentations) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PAGE_WIDTH, 1.9 * rows + 0.4), squeeze=False, sharey=True)
    for ax, aug in zip(axes.flat, augmentations):
        stages = sorted({stage for data in series.values() for stage in data.get(aug, {})}, key=_stage_key)
        for label, data in series.items():
            shown = [stage for stage in stages if stage in data.get(aug, {})]
            ax.plot([stages.index(s) for s in shown], [data[aug][s] for s in shown], marker="o", markersize=3,
                    label=label)
        ax.set_xticks(range(len(stages)), stages, rotation=60, fontsize=FONT_SIZE - 2)
        ax.set_title(aug)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(augmentations):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("InfoNCE")
    legend = {label: handle for ax in axes.flat for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend))
    fig.suptitle(textwrap.fill(title, TITLE_CHARS), fontsize=FONT_SIZE + 1)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _stage_figure(ctx: SetupResults, out: Path, name: str, caption: str, series: list[Series]) -> Figure | None:
    if not series:
        return None
    figure = Figure.of(name, caption, ctx, series)
    data = {label: mean_sensitivity(results) for label, _, results in series}
    return _save(_stage_lines(data, f"{caption} ({ctx.setup})"), figure, out)


def fig6(ctx: SetupResults, out: Path) -> Figure | None:
    return _stage_figure(ctx, out, "fig6", f"InfoNCE per stage and augmentation, "
                         f"{framework_label(ABLATION_FRAMEWORK)} variants (higher: more augmentation-sensitive)",
                         _series_of(ctx, ABLATION_FRAMEWORK, VARIANTS, "sensitivity"))


def fig9(ctx: SetupResults, out: Path) -> Figure | None:
    externals = ctx.externals_by_name("sensitivity")
    if not externals:
        return None
    series = _series_of(ctx, ABLATION_FRAMEWORK, ("vanilla", "cassle"), "sensitivity")
    series += [(name, [], results) for name, results in externals.items()]
    return _stage_figure(ctx, out, "fig9", "InfoNCE per stage: MoCo-v2 against checkpoints trained elsewhere", series)


def fig10(ctx: SetupResults, out: Path) -> Figure | None:
    return _stage_figure(ctx, out, "fig10", "InfoNCE per stage and augmentation, MoCo-v1 variants (no projector)",
                         _series_of(ctx, NO_PROJECTOR_FRAMEWORK, VARIANTS, "sensitivity"))


def _encoder_label(size: tuple[int, int], same_depth: bool) -> str:
    return str(size[1]) if same_depth else f"{size[0]}x{size[1]}"


def fig8(ctx: SetupResults, out: Path) -> Figure | None:
    """Feature-extractor InfoNCE per augmentation for CASSLE runs differing only in encoder size (and vanilla)."""
    groups = {size: runs for size, runs in ctx.ablation("encoder", encoder_size).items()
              if ctx.evals_of(runs, "sensitivity")}
    if len(groups) < 2:
        return None
    same_depth = len({depth for depth, _ in groups}) == 1
    series = [("None", runs, results) for _, runs, results in
              _series_of(ctx, ABLATION_FRAMEWORK, ("vanilla",), "sensitivity")]
    series += [(_encoder_label(size, same_depth), runs, ctx.evals_of(runs, "sensitivity"))
               for size, runs in sorted(groups.items())]
    figure = Figure.of("fig8", "InfoNCE at the feature extractor output against the augmentation encoder size "
                       f"(output width{'' if same_depth else ': depth x width'}; None: vanilla)", ctx, series)
    data = {label: mean_sensitivity(results) for label, _, results in series}
    augmentations = _ordered((aug for s in data.values() for aug in s), AUGMENTATION_ORDER)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH / 2, 2.4))
    width = 0.8 / len(data)
    for i, (label, values) in enumerate(data.items()):
        heights = [values.get(aug, {}).get(FEATURE_STAGE, float("nan")) for aug in augmentations]
        ax.bar([a + (i - (len(data) - 1) / 2) * width for a in range(len(augmentations))], heights, width,
               label=label)
    ax.set_xticks(range(len(augmentations)), augmentations, rotation=30, ha="right")
    ax.set_ylabel(f"InfoNCE ({FEATURE_STAGE})")
    ax.legend(title="encoder size", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"{framework_label(ABLATION_FRAMEWORK)} + CASSLE ({ctx.setup})")
    fig.tight_layout()
    return _save(fig, figure, out)


def _history(runs: list[PretrainRun]) -> pd.DataFrame | None:
    """Mean over seeds of the contrastive loss per step (column ssl, else loss), with its epoch."""
    frames = []
    for run in runs:
        frame = pd.read_csv(run.history) if run.history is not None else pd.DataFrame()
        column = next((name for name in ("ssl", "loss") if name in frame), None)
        if column is None or "step" not in frame:
            continue
        epoch = frame["epoch"] if "epoch" in frame else frame["step"]
        frames.append(pd.DataFrame({"step": frame["step"], "epoch": epoch, "loss": frame[column]}))
    if not frames:
        return None
    return pd.concat(frames).groupby("step", as_index=True)[["epoch", "loss"]].mean()


def fig7(ctx: SetupResults, out: Path) -> Figure | None:
    """Pretraining loss of the MoCo-v2 variants: absolute, and as a ratio to vanilla at the same step."""
    curves = {}
    runs_used: list[PretrainRun] = []
    for variant in VARIANTS:
        runs = ctx.runs_where(ABLATION_FRAMEWORK, variant)
        history = _history(runs)
        if history is not None:
            curves[VARIANTS[variant]] = history
            runs_used += [run for run in runs if run.history is not None]
    if not curves:
        return None
    figure = Figure("fig7", f"Contrastive loss during pretraining of the {framework_label(ABLATION_FRAMEWORK)} "
                    "variants: absolute (left) and relative to vanilla (right, loss / vanilla loss at the same step)",
                    ctx, runs_used)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 2.4))
    baseline = curves.get(VARIANTS["vanilla"])
    for label, history in curves.items():
        left.plot(history["epoch"], history["loss"], label=label)
        if baseline is not None:
            joined = history.join(baseline["loss"].rename("base"), how="inner")
            right.plot(joined["epoch"], joined["loss"] / joined["base"], label=label)
    left.set(xlabel="epoch", ylabel="contrastive loss", title="absolute")
    right.set(xlabel="epoch", ylabel="loss / vanilla loss", title="relative to vanilla")
    if baseline is None:
        right.text(0.5, 0.5, "no vanilla run", ha="center", va="center", transform=right.transAxes)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{framework_label(ABLATION_FRAMEWORK)} pretraining ({ctx.setup})", fontsize=FONT_SIZE + 1)
    fig.tight_layout()
    return _save(fig, figure, out)


def _histograms(results: list[EvalResult]) -> tuple[list[float], list[float], list[float]] | None:
    """(edges, true counts, random counts) summed over the results' histogram files; None when one lacks it."""
    total: tuple[list[float], list[float], list[float]] | None = None
    for result in results:
        path = result.path / CONDITIONING_HISTOGRAM
        if not path.is_file():
            return None
        data = read_json(path)
        if total is None:
            total = (data["edges"], list(data["true"]), list(data["random"]))
        elif data["edges"] != total[0]:
            return None
        else:
            total = (total[0], [a + b for a, b in zip(total[1], data["true"])],
                     [a + b for a, b in zip(total[2], data["random"])])
    return total


def _mean_of(results: list[EvalResult], key: str) -> float:
    values = [float(r.metrics[key]) for r in results if isinstance(r.metrics.get(key), (int, float))]
    return sum(values) / len(values) if values else float("nan")


def fig3(ctx: SetupResults, out: Path) -> Figure | None:
    """Projector similarity of positive pairs with their true omega against a random one, per CASSLE framework: the
    paper's histograms (one panel per framework, seeds pooled) when every eval saved its histogram file, else the
    two means per framework."""
    series = [s for framework in ctx.frameworks() for s in _series_of(ctx, framework, ("cassle",), "conditioning")]
    if not series:
        return None
    histograms = [_histograms(results) for _, _, results in series]
    if all(h is not None for h in histograms):
        return _fig3_histograms(ctx, out, series, histograms)  # type: ignore[arg-type]
    figure = Figure.of("fig3", "Cosine similarity of CASSLE projector outputs of positive pairs conditioned on "
                       "their true omega (green) or a random one (red), means (an eval without its histogram file "
                       "keeps only them); the label gives the share of pairs where true > random", ctx, series)
    plt = _pyplot()
    # ~0.8 in per framework, plus the legend on the right; at most a page wide
    fig, ax = plt.subplots(figsize=(min(PAGE_WIDTH, max(PAGE_WIDTH / 2, 0.8 * len(series) + 2.2)), 2.4))
    for i, (label, _, results) in enumerate(series):
        true, random = _mean_of(results, "mean_true"), _mean_of(results, "mean_random")
        ax.plot([i, i], [random, true], color="0.6", zorder=1)
        ax.scatter([i], [true], color="tab:green", zorder=2, label="true omega" if i == 0 else None)
        ax.scatter([i], [random], color="tab:red", zorder=2, label="random omega" if i == 0 else None)
        share = _mean_of(results, "fraction_true_beats_random")
        if not math.isnan(share):                   # no result holds the share: no label, rather than "nan%"
            ax.annotate(f" {100 * share:.0f}%", (i, (true + random) / 2), fontsize=FONT_SIZE - 1, va="center")
    ax.set_xticks(range(len(series)), [label.replace(" + ", "\n+ ") for label, _, _ in series])
    ax.set_xlim(-0.5, len(series) - 0.5 + 0.3)
    ax.set_ylabel("mean cosine similarity")
    ax.grid(alpha=0.3, axis="y")
    ax.plot([], [], " ", label="%: pairs where\ntrue > random")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title(f"Projector conditioning ({ctx.setup})")
    fig.tight_layout()
    return _save(fig, figure, out)


def _fig3_histograms(ctx: SetupResults, out: Path, series: list[Series],
                     histograms: list[tuple[list[float], list[float], list[float]]]) -> Figure:
    """Fig 3 as in the paper: per framework, the histograms of both similarities with solid lines at their means."""
    figure = Figure.of("fig3", "Cosine similarity of CASSLE projector outputs of positive pairs conditioned on "
                       "their true omega (green) or a random one (red), with their means (solid lines); the title "
                       "gives the share of pairs where true > random", ctx, series)
    plt = _pyplot()
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PAGE_WIDTH if columns > 1 else PAGE_WIDTH / 2, 2.0 * rows),
                             squeeze=False)
    for ax, (label, _, results), (edges, true, random) in zip(axes.flat, series, histograms):
        for counts, colour, name, key in ((true, "tab:green", "true omega", "mean_true"),
                                          (random, "tab:red", "random omega", "mean_random")):
            ax.stairs(counts, edges, fill=True, alpha=0.45, color=colour, label=name)
            ax.axvline(_mean_of(results, key), color=colour, linewidth=1.5)
        used = [e for e, t, r in zip(edges, true, random) if t or r]
        if used:
            ax.set_xlim(used[0], used[-1] + (edges[1] - edges[0]))
        share = _mean_of(results, "fraction_true_beats_random")
        ax.set_title(label + ("" if math.isnan(share) else f": {100 * share:.0f}% true > random"))
        ax.set_xlabel("cosine similarity")
    for ax in axes.flat[len(series):]:
        ax.set_visible(False)
    axes.flat[0].set_ylabel("pairs")
    axes.flat[0].legend()
    fig.suptitle(f"Projector conditioning ({ctx.setup})", fontsize=FONT_SIZE + 1)
    fig.tight_layout()
    return _save(fig, figure, out)


def fig5(ctx: SetupResults, out: Path) -> Figure | None:
    """The retrieval grids the evals drew, side by side: one column per MoCo-v2 variant, one row per dataset."""
    series = _series_of(ctx, ABLATION_FRAMEWORK, VARIANTS, "retrieval")
    datasets = sorted({r.dataset for _, _, results in series for r in results})
    if not datasets:
        return None
    plt = _pyplot()
    figure = Figure.of("fig5", "Image retrieval: queries and their nearest neighbours in the "
                       f"{framework_label(ABLATION_FRAMEWORK)} variants' feature space (green: same class)", ctx,
                       series)
    fig, axes = plt.subplots(len(datasets), len(series), figsize=(PAGE_WIDTH, 4.2 * len(datasets)), squeeze=False)
    for i, dataset in enumerate(datasets):
        for j, (label, _, results) in enumerate(series):
            ax = axes[i, j]
            ax.axis("off")
            ax.set_title(f"{label}\n{dataset}")
            grids = sorted(r.path / "retrieval.png" for r in results if r.dataset == dataset)
            grids = [g for g in grids if g.is_file()]
            if grids:
                ax.imshow(plt.imread(grids[0]))
            else:
                ax.text(0.5, 0.5, "no retrieval grid", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return _save(fig, figure, out)


FIGURES: dict[str, Callable[[SetupResults, Path], Figure | None]] = {
    "fig3": fig3, "fig5": fig5, "fig6": fig6, "fig7": fig7, "fig8": fig8, "fig9": fig9, "fig10": fig10,
}


def build_figures(ctx: SetupResults, out: Path) -> list[Figure]:
    """Draw every figure that has data in this setup into `out`."""
    return [figure for draw in FIGURES.values() if (figure := draw(ctx, out)) is not None]
