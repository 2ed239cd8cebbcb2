"""Every difference from the paper's Table 5 and the authors' code, as one table built from the code's own defaults.

Each `Difference` names the setting, what the paper / the authors' code does, what cassle does (its text is filled
with the resolved defaults of the framework it concerns, so a changed default changes the table), why, and what
the paper grid (config/config.yaml) sets to run the authors' recipe instead. docs/differences.md embeds
`differences_table()`; tests/test_differences.py keeps the two equal and checks every `grid` entry against the grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cassle.config import resolve


@dataclass(frozen=True)
class Difference:
    """One row: `ours` may hold `{key}` fields (config keys, dots written as `_`) filled with the defaults of
    `framework`; `grid` holds the config keys the paper grid sets (for `framework`'s runs, every run when None;
    ResNet runs only when `resnets_only`)."""

    area: str
    setting: str
    theirs: str
    ours: str
    why: str
    framework: str | None = None
    grid: Mapping[str, Any] = field(default_factory=dict)
    resnets_only: bool = False

    def defaults(self) -> dict[str, Any]:
        """The resolved defaults of the row's framework (MoCo-v2 for rows about every framework)."""
        return resolve({"framework": self.framework or "mocov2", "epochs": 1})

    def rendered_ours(self) -> str:
        values = {key.replace(".", "_"): _yaml(value) for key, value in self.defaults().items()}
        text = self.ours.format_map(values)
        if self.grid:
            settings = ", ".join(f"`{key}: {_yaml(value)}`" for key, value in self.grid.items())
            text += f". The paper grid sets {settings}"
        return text


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


AUTHORS = "the authors"
DIFFERENCES: tuple[Difference, ...] = (
    # --- frameworks -------------------------------------------------------------------------------------------------
    Difference("Frameworks", "MoCo-v2: what enters the queue",
               f"{AUTHORS}' code enqueues the online queries of view 1",
               "`compat: {compat}`: the momentum encoder's keys, as MoCo; `compat: authors`: the queries",
               "MoCo's queue holds keys of a slowly moving encoder; the paper's MoCo numbers come from the authors' "
               "code",
               framework="mocov2", grid={"compat": "authors"}),
    Difference("Frameworks", "MoCo-v2: projector hidden layer",
               f"Table 5 / MoCo-v2: Linear-ReLU-Linear; {AUTHORS}' code adds BatchNorm after the hidden Linear",
               "`compat: {compat}`: no BatchNorm, as MoCo-v2; `compat: authors`: BatchNorm, as the authors",
               "the paper's numbers were made with the authors' projector", framework="mocov2",
               grid={"compat": "authors"}),
    Difference("Frameworks", "MoCo-v2: shuffle-BN",
               f"MoCo-v2: shuffle-BN (the key encoder's BatchNorm never sees the query's batch); {AUTHORS}: none, "
               "SyncBN over the whole batch with the key encoder in train mode",
               "none, as the authors: under DDP the BatchNorm layers are synchronised, so the key encoder "
               "normalises with the statistics of the whole key batch",
               "the paper's numbers were made without it; the leak it stops (a key's batch statistics shared with "
               "its positive) makes the pretext task slightly easier, in the authors' runs and ours alike",
               framework="mocov2"),
    Difference("Frameworks", "SimCLR: negatives",
               f"{AUTHORS}: each GPU's own batch only (8 GPUs at batch 1024: 2 x 128 - 2 = 254 per anchor)",
               "`compat: {compat}`: the global batch over every process, as SimCLR (2 x 1024 - 2 = 2046 per "
               "anchor); `compat: authors`: each process's batch",
               "the paper grid runs `compat: authors` on `launch.pretrain.gpus` (2) processes: 1022 negatives per "
               "anchor, more than the authors' 254 (the number depends on the GPU count); set `gpus: 8` for SimCLR "
               "to match them (launch resources apply to every pretraining job)",
               framework="simclr", grid={"compat": "authors"}),
    Difference("Frameworks", "MoCo-v3: momentum rate",
               f"MoCo-v3: 0.99 -> 1 with a cosine; {AUTHORS}' code: 0.999 fixed",
               "`compat: {compat}`: {ema} -> {ema_final} with a cosine; `compat: authors`: 0.999",
               "the paper's MoCo-v3 numbers come from the authors' code", framework="mocov3",
               grid={"compat": "authors"}),
    Difference("Frameworks", "MoCo-v3: ViT-S/16",
               f"{AUTHORS}: MoCo-v3's ViT (fixed sine-cosine position embeddings, frozen random patch projection, "
               "timm blocks)",
               "torchvision's VisionTransformer with MoCo-v3's 12 heads and learned position embeddings",
               "no timm dependency; MoCo-v3's fixed embeddings and frozen patch projection are measures for stable "
               "training, so the ViT rows can differ from the paper's for this reason",
               framework="mocov3"),
    Difference("Frameworks", "Barlow Twins: optimiser",
               "Barlow Twins: LARS; Table 5 and the authors: SGD lr 0.05, biases and norms at lr x 0.024",
               "`optimizer: {optimizer}`, `base_lr: {base_lr}`, biases and norms at lr x 0.024, as Table 5",
               "the paper's setting; `optimizer: lars` gives Barlow Twins' own", framework="barlow"),
    Difference("Frameworks", "Barlow Twins: warm-up start",
               f"{AUTHORS}: a per-epoch LinearLR warm-up from lr/10 over 10 epochs",
               "per-step linear warm-up over {warmup_epochs} epochs from `warmup_start_factor: "
               "{warmup_start_factor}` x lr",
               "the same start and end, stepped per step instead of per epoch", framework="barlow"),
    Difference("Frameworks", "BYOL",
               f"not reachable in {AUTHORS}' `pretrain_cond.py` (missing from its choices)",
               "reachable: `optimizer: {optimizer}`, `base_lr: {base_lr}`, momentum {ema} -> {ema_final} per step",
               "BYOL's published recipe", framework="byol"),
    Difference("Frameworks", "Learning-rate and momentum schedules",
               f"{AUTHORS}: the cosine steps once per epoch (BYOL's momentum too)",
               "per optimiser step (warm-up, cosine, momentum rate)",
               "a run resumes mid-epoch; over hundreds of epochs the two schedules agree to within one epoch's step"),
    Difference("Frameworks", "ResNet: last BatchNorm of each residual block",
               f"{AUTHORS}: `zero_init_residual=True` (every residual branch starts at 0)",
               "`zero_init_residual: {zero_init_residual}` (torchvision's default)",
               "torchvision's default for other uses; the paper's runs started from zero residual branches",
               grid={"zero_init_residual": True}, resnets_only=True),
    Difference("Frameworks", "ResNet: initialisation",
               f"{AUTHORS}: every conv and linear layer re-initialised with PyTorch's default (kaiming-uniform "
               "a = sqrt(5)), over torchvision's kaiming-normal",
               "`backbone_init: {backbone_init}`",
               "torchvision's init is the usual one; the paper's runs used the authors'",
               grid={"backbone_init": "authors"}, resnets_only=True),
    Difference("Frameworks", "Momentum encoders, queue and RNG on resume",
               f"{AUTHORS}: not checkpointed (a resume restarts them; the public `pretrain_cond.py` cannot resume)",
               "checkpointed with every RNG state: a resumed run is bit-identical to an uninterrupted one",
               "no effect on an uninterrupted run"),
    Difference("Frameworks", "MoCo queue pointer",
               f"{AUTHORS}: assumes the queue length is a multiple of the global batch",
               "wraps around for any batch size", "identical when the length is a multiple"),
    Difference("Frameworks", "CASSLE hypernetwork injection",
               f"{AUTHORS}: generated weights used as they are",
               "generated weights scaled by 1/sqrt(fan_in); the projector's final BatchNorm kept",
               "the generated values have unit scale (the encoder ends in BatchNorm), so unscaled layers would grow "
               "the activations by sqrt(fan_in) (45x at 2048 inputs); Table 4's hypernetwork row only"),
    # --- augmentations ----------------------------------------------------------------------------------------------
    Difference("Augmentations", "Colour-jitter order",
               f"{AUTHORS}: one random order of the four jitter operations per batch (kornia 0.4)",
               "one order per sample", "samples of a batch are independent; neither code records the order in omega"),
    Difference("Augmentations", "Blur kernel grid",
               f"{AUTHORS}: taps at linspace(-k/2, k/2, k)",
               "torchvision's linspace(-(k-1)/2, (k-1)/2, k)",
               "torchvision's symmetric grid; the authors' stretches the kernel by k/(k-1)"),
    # --- datasets ---------------------------------------------------------------------------------------------------
    Difference("Datasets", "Caltech-101, SUN397, CUB-200 splits",
               f"{AUTHORS}: index files that are not public", "seeded stratified splits of the same sizes (CUB-200: "
               "4994/1000 instead of 4990/1000)", "the files are not available"),
    Difference("Datasets", "ImageNet-100 validation carve-out",
               f"{AUTHORS}: int() sizes that can fail to add up", "rounded so the sizes always add up",
               "a crash otherwise; same sizes where theirs works"),
    Difference("Datasets", "300W splits", f"{AUTHORS}: split files rewritten into the data folder on every load",
               "drawn in memory from the same seed", "no writes into the data"),
    Difference("Datasets", "Pretraining datasets", f"{AUTHORS}: ImageNet-100 and STL-10 only",
               "also ImageNet-1k (MoCo-v3), CIFAR-10/100 and `synthetic`", "config/cifar10.yaml and the demo"),
    Difference("Datasets", "Unreadable image files", f"{AUTHORS}' loaders crash",
               "the error names the file; `CASSLE_SKIP_CORRUPT=1` skips such files with one warning listing them",
               "docs/reliability.md"),
    # --- evaluations ------------------------------------------------------------------------------------------------
    Difference("Evaluations", "Linear probe: objective",
               f"{AUTHORS}: the bias is penalised too; warm start over an ascending grid; tolerances that run all "
               "5000 L-BFGS iterations",
               "the bias is free (scikit-learn's C = 1/(2w)); warm start from the strongest penalty down; "
               "tolerances on the objective / N", "an exact reparametrisation (centring) and a check against "
               "scikit-learn; docs/evaluation.md"),
    Difference("Evaluations", "300W regression",
               f"{AUTHORS}: L-BFGS on an L1 loss, selection and report with their pooled squared correlation",
               "ridge (exact), selection with scikit-learn's `r2_score`; both `r2` and `r2_authors` reported, the "
               "tables (2, 4, 9, 10) show `r2_authors`, the paper's metric",
               "the paper's 300W figures are the pooled squared correlation; a mean-face model scores 0 on "
               "`r2_score` but ~0.99 on it"),
    Difference("Evaluations", "Rotation prediction", f"{AUTHORS} (dev-only): one angle per batch",
               "all four rotations of every image", "balanced classes per image"),
    Difference("Evaluations", "Corruptions", f"{AUTHORS}: no corruption code; ImageNet-C frost uses six photographs",
               "our own ImageNet-C-style corruptions; frost textures are procedural",
               "the photographs cannot be shipped: compare frost numbers between models only"),
    Difference("Evaluations", "Detection", f"{AUTHORS}: detectron2 R50-C4, 11-point VOC07 AP",
               "torchvision's Faster R-CNN with a C4 head, all-point AP (`--eleven-point` for VOC07's)",
               "no detectron2 dependency; docs/evaluation.md lists the remaining differences"),
    # --- reports ----------------------------------------------------------------------------------------------------
    Difference("Reports", "Fig 7 relative curve", "the paper does not say ratio or difference",
               "the ratio to vanilla at the same step", "a scale-free comparison"),
    Difference("Reports", "Table 4 hidden-size block, Avg. rank",
               "two of the six printed ranks disagree with the printed accuracies",
               "ranks recomputed from the accuracies", "the other four blocks reproduce to the printed precision"),
    Difference("Reports", "Fig 8 encoder sizes", "the paper does not list the sizes it plotted",
               "the runs of Table 4's hidden-size block (widths 16-512 and the default 64)", "the runs exist already"),
    Difference("Workflow", "How experiments run", f"{AUTHORS}: one script per experiment, numbers read off logs",
               "one Snakemake DAG plans every run from config/config.yaml; a run folder is named by the hash of its "
               "config, so a run shared by several tables is trained once", "reproducibility; no effect on numbers"),
)
"""Every difference, in the order of docs/differences.md."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def differences_table() -> str:
    """The Markdown table of every difference (docs/differences.md embeds it; a test keeps the two equal)."""
    lines = ["| area | setting | paper / authors | ours | why |", "|---|---|---|---|---|"]
    for row in DIFFERENCES:
        cells = (row.area, row.setting, row.theirs, row.rendered_ours(), row.why)
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines)
