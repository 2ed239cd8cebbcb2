"""Reliability (issue #8): damaged checkpoints, bad configs (and a fuzz of the config loader), missing or unreadable
data, crashes in the middle of a write. docs/reliability.md lists every guarantee with the test that proves it."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cassle.apps.cli import main as cli_main
from cassle.apps.engine.checkpoint import CheckpointManager, CheckpointWarning
from cassle.apps.engine.trainer import pretrain, view_sampler
from cassle.augment import ViewSampler
from cassle.config import FIELDS, ConfigError, experiment_hash, load_config, resolve
from cassle.core.io import read_csv_rows, read_json
from cassle.data import CorruptImageError, get_dataset
from cassle.methods import FRAMEWORKS, VARIANTS, build_method
from cassle.nets import INJECTIONS

from damage import garble, truncate

REPO = Path(__file__).resolve().parents[1]
TINY = {"framework": "mocov2", "variant": "cassle", "backbone": "resnet_narrow", "dataset": "synthetic",
        "batch_size": 16, "projector.hidden_dim": 64, "projector.out_dim": 32, "queue_size": 64,
        "conditioning.encoder_depth": 2, "conditioning.encoder_width": 16, "num_workers": 0,
        "max_steps": 6, "checkpoint_every": 2, "log_every": 1}


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: these models are tiny, and two threads on a shared 2-core machine thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with one_thread():
        yield


def without_speed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """History rows without what depends on when they were written (throughput, wall-clock time)."""
    return [{key: value for key, value in row.items() if key not in ("samples_per_s", "time")} for row in rows]


def assert_same_weights(a: Path, b: Path) -> None:
    """backbone.pt and checkpoint.pt of two run folders hold bit-identical tensors."""
    for name in ("backbone.pt", "checkpoint.pt"):
        first, second = (torch.load(folder / name, weights_only=True) for folder in (a, b))
        first, second = (x.get("model", x) for x in (first, second))
        assert first.keys() == second.keys()
        differing = [key for key in first if not torch.equal(first[key], second[key])]
        assert not differing, f"{name} differs: {differing[:5]}"


# ------------------------------------------------------------------------------------------------ corrupt state
@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 6-step run; its work folder keeps the checkpoints of steps 4 and 6."""
    out = tmp_path_factory.mktemp("straight")
    with one_thread():  # as the resumed runs: the weights are compared bit for bit
        pretrain(resolve(TINY), out, progress=False)
    assert sorted(p.name for p in (out / "work").glob("*.pt")) == ["ckpt-4.pt", "ckpt-6.pt"]
    return out


def test_rerun_of_a_finished_run_reports_the_same_final_metrics(straight_run, tmp_path):
    """Outputs deleted after the last checkpoint (as Snakemake does before rerunning a job): the rerun trains no
    step and writes the same weights and final losses as the uninterrupted run."""
    shutil.copytree(straight_run / "work", tmp_path / "work")
    shutil.copy(straight_run / "history.csv", tmp_path / "history.csv")
    with one_thread():
        metrics = pretrain(resolve(TINY), tmp_path, progress=False)
    before = json.loads((straight_run / "metrics.json").read_text())
    assert metrics["resumed"] is True and metrics["steps"] == before["steps"]
    assert metrics["final"] == before["final"] and set(metrics["final"]) >= {"loss", "ssl"}
    assert_same_weights(straight_run, tmp_path)


def sidecar_of_other_bytes(path: Path) -> None:
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(b'other').hexdigest()}  {path.name}\n")


def sidecar_of_binary_garbage(path: Path) -> None:
    path.with_name(path.name + ".sha256").write_bytes(bytes(range(256)))


@pytest.mark.parametrize("damage", [truncate, garble, sidecar_of_other_bytes, sidecar_of_binary_garbage])
def test_damaged_latest_checkpoint_falls_back_and_pretrain_ends_as_uninterrupted(straight_run, tmp_path, damage):
    """The run died after writing ckpt-6 (not its outputs) and ckpt-6 or its checksum got damaged on disk."""
    shutil.copytree(straight_run / "work", tmp_path / "work")
    shutil.copy(straight_run / "history.csv", tmp_path / "history.csv")
    bad, good = tmp_path / "work" / "ckpt-6.pt", tmp_path / "work" / "ckpt-4.pt"
    damage(bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = pretrain(resolve(TINY), tmp_path, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert len(messages) == 1, messages
    assert str(bad) in messages[0] and "ckpt-6.pt.sha256" in messages[0] and f"falling back to {good}" in messages[0]
    assert metrics["resumed"] is True and metrics["steps"] == 6
    assert_same_weights(straight_run, tmp_path)
    assert without_speed(read_csv_rows(tmp_path / "history.csv")) == \
        without_speed(read_csv_rows(straight_run / "history.csv"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the damaged checkpoint was replaced by a verified one
        assert CheckpointManager(tmp_path / "work").load_latest()[1] == 6  # type: ignore[index]


def test_no_valid_checkpoint_left_stops_instead_of_restarting(straight_run, tmp_path):
    shutil.copytree(straight_run / "work", tmp_path / "work")
    for path in (tmp_path / "work").glob("ckpt-*.pt"):
        garble(path)
    with pytest.warns(CheckpointWarning), pytest.raises(RuntimeError, match=r"no valid checkpoint.*ckpt-6\.pt.*"
                                                                             r"ckpt-4\.pt.*Delete these files"):
        pretrain(resolve(TINY), tmp_path, progress=False)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "backbone.pt").exists()


# ------------------------------------------------------------------------------------------------ bad config
def cyclic_section() -> dict:
    """{'x': {'x': ...}}: what YAML builds from `&a {x: *a}`."""
    section: dict = {}
    section["x"] = section
    return section


SIMCLR = {"framework": "simclr"}
CASSLE = {"framework": "simclr", "variant": "cassle"}
BAD_CONFIGS = {  # id: (raw config, the key, the value as shown, what is allowed)
    "unknown framework": ({"framework": "simclr2"}, "'framework'", "'simclr2'", "simclr, mocov2, barlow"),
    "unknown variant": ({**SIMCLR, "variant": "augment"}, "'variant'", "'augment'", "vanilla, augself, cassle"),
    "unknown key": ({**SIMCLR, "conditioning.injections": "add"}, "'conditioning.injections'", "'add'",
                    "did you mean conditioning.injection"),
    "wrong type": ({**SIMCLR, "batch_size": "256"}, "'batch_size'", "'256'", "expected int or null"),
    "bool for a number": ({**SIMCLR, "epochs": True}, "'epochs'", "True", "expected int or null"),
    "negative batch": ({**SIMCLR, "batch_size": -256}, "'batch_size'", "-256", "a number > 0"),
    "omega key that does not exist": ({**CASSLE, "conditioning.omega_keys": ["crop", "hue"]},
                                      "'conditioning.omega_keys'", "['crop', 'hue']", "blur, color, color_diff"),
    "mocov1 without add": ({"framework": "mocov1", "variant": "cassle", "conditioning.injection": "mul"},
                           "'conditioning.injection'", "'mul'", "use 'add'"),
    "injection needing an encoder": ({**CASSLE, "conditioning.injection": "hypernet",
                                      "conditioning.encoder_depth": 0},
                                     "'conditioning.encoder_depth'", "= 0", "(encoder_depth >= 1)"),
    "mocov1 needing an encoder": ({"framework": "mocov1", "variant": "cassle", "conditioning.encoder_depth": 0},
                                  "'conditioning.encoder_depth'", "= 0", "(encoder_depth >= 1)"),
    "hypernet_bn without hypernet": ({**CASSLE, "conditioning.hypernet_bn": True}, "'conditioning.hypernet_bn'",
                                     "True", "needs injection 'hypernet'"),
    "vit patch size": ({"framework": "mocov3", "image_size": 100}, "'image_size'", "100", "multiple of"),
    "vit with a cifar stem": ({"framework": "mocov3", "cifar_stem": True}, "'cifar_stem'", "True", "false or null"),
    "unregistered dataset": ({**SIMCLR, "dataset": "imagenet21k"}, "'dataset'", "'imagenet21k'", "imagenet100"),
    "device": ({**SIMCLR, "device": "gpu"}, "'device'", "'gpu'", "cuda:N"),
    "negative seed": ({**SIMCLR, "seed": -1}, "'seed'", "-1", "[0, 2**32 - 1]"),
    "empty crop": ({**SIMCLR, "augment.crop_scale": [0.0, 1.0]}, "'augment.crop_scale'", "[0.0, 1.0]", "0 < low"),
    "hue above 0.5": ({**SIMCLR, "augment.jitter": [0.4, 0.4, 0.4, 0.6]}, "'augment.jitter'", "0.6",
                      "hue <= 0.5"),
    "infinite sigma": ({**SIMCLR, "augment.blur_sigma": [0.1, float("inf")]}, "'augment.blur_sigma'", "inf",
                       "two finite numbers"),
    "bool weight": ({**SIMCLR, "augself.weights": {"crop": True}}, "'augself.weights'", "True", "finite weights"),
    "float overflow": ({**SIMCLR, "base_lr": 10**400}, "'base_lr'", "1000", "a finite number"),
    "float overflow in a range": ({**SIMCLR, "augment.blur_sigma": [0.1, 10**400]}, "'augment.blur_sigma'",
                                  "[0.1, 1000", "two finite numbers"),
    "self-referencing section": ({**SIMCLR, "conditioning": cyclic_section()}, "'conditioning.x.x'", "{'x': {'x':",
                                 "allowed keys"),
}


@pytest.mark.parametrize("raw,key,value,allowed", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_error_naming_key_value_and_allowed(raw, key, value, allowed):
    with pytest.raises(ConfigError) as error:
        resolve(raw)
    message = str(error.value)
    assert key in message and value in message and allowed in message, message
    chained = error.value.__cause__ or (None if error.value.__suppress_context__ else error.value.__context__)
    assert chained is None  # no "During handling of the above exception" second story


@pytest.mark.parametrize("override,named", [
    ("conditioning.injection=hypernet", "'conditioning.encoder_depth' = 0"),
    ("seed=2001-13-45", "month must be in 1..12"),  # YAML reads a date, Python refuses it
    ("dataset=imagenet21k", "'dataset' = 'imagenet21k'"),
])
def test_cli_refuses_bad_config_before_anything_runs(tmp_path, capsys, override, named):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**CASSLE, "conditioning": {"encoder_depth": 0}, "max_steps": 1}))
    out = tmp_path / "out"
    assert cli_main(["pretrain", str(config), "--set", override, "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cassle: error: ") and named in err and "Traceback" not in err
    assert not out.exists()


SMALL = {"backbone": "resnet_narrow", "dataset": "synthetic", "image_size": 16, "max_steps": 1, "batch_size": 4,
         "projector.hidden_dim": 16, "projector.out_dim": 8, "predictor.hidden_dim": 16, "queue_size": 8,
         "conditioning.encoder_width": 8}


def cassle_grid() -> list[dict]:
    """CASSLE with every framework x injection x encoder depth 0/1 (x hypernet_bn); every framework x variant is built
    and trained in test_methods.py."""
    cells = []
    for framework, injection, depth in itertools.product(FRAMEWORKS, INJECTIONS, (0, 1)):
        for bn in (False, True) if injection == "hypernet" else (False,):
            cells.append({"framework": framework, "variant": "cassle", "conditioning.injection": injection,
                          "conditioning.encoder_depth": depth, "conditioning.hypernet_bn": bn})
    return cells


def test_every_config_resolve_accepts_builds_and_runs():
    """The config checks mirror the model's: a combination resolve accepts never fails once the job started."""
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    generator = torch.Generator().manual_seed(0)
    (v1, w1), (v2, w2) = (ViewSampler(size=16)(images, generator=generator) for _ in range(2))
    accepted = 0
    for cell in cassle_grid():
        try:
            config = resolve({**SMALL, **cell})
        except ConfigError:
            continue
        losses = build_method(config)((v1, v2), (w1, w2))
        assert torch.isfinite(losses["loss"]), cell
        accepted += 1
    assert accepted == 6 * 5 + 6 + 1  # depth 1: 4 injections + hypernet_bn; depth 0: cat; mocov1: add, depth 1


def test_keys_a_run_does_not_read_are_accepted_and_ignored():
    """Workflow groups, tiny.yaml and test configs share keys across frameworks and variants."""
    plain = resolve({**SMALL, "framework": "simclr"})
    extra = resolve({**SMALL, "framework": "simclr", "conditioning.injection": "hypernet", "queue_size": 4,
                     "lambd": 0.5, "augself.weights": {"flip": 1.0}})
    states = []
    for config in (plain, extra):
        torch.manual_seed(0)
        states.append(build_method(config).state_dict())
    assert states[0].keys() == states[1].keys() and all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert experiment_hash(plain) != experiment_hash(extra)  # they still name another run folder


# The config loader under arbitrary input: a valid config or one ConfigError, never another exception. Inputs start
# from a valid config and get a few edits (in the file or as overrides) of four kinds: extreme numbers on numeric keys,
# tricky raw YAML (impossible dates, huge integers, self-referencing aliases, tags), nested or cyclic sections, and
# arbitrary values; then the file may be cut, spliced, replaced by YAML-ish noise or written in another encoding.
SECTIONS = st.sampled_from(["conditioning", "augment", "projector", "augself", "framwork", "a.b.c"])
NAMES = st.sampled_from(list(FIELDS)) | SECTIONS
KINDS = {key: set(field.kind if isinstance(field.kind, tuple) else (field.kind,)) for key, field in FIELDS.items()}
NUMERIC = st.sampled_from([key for key, kinds in KINDS.items() if {int, float} & kinds])
LISTS = st.sampled_from([key for key, kinds in KINDS.items() if list in kinds and key != "conditioning.omega_keys"])
EXTREMES = (st.sampled_from(["1" * 400, "-" + "1" * 400, "1e400", ".nan", "-.inf"])
            | st.sampled_from(["-1", "0", "4294967296", "1e308", "true", "0x1F", "1:30:00", "1_000", "~"])
            | st.integers().map(str) | st.floats().map(repr))
TRICKY = st.sampled_from(["2001-13-45", "2001-02-30 25:61:00", "!!timestamp 2001-99-99", "1" * 400, "&a [*a]",
                          "&b {x: *b}", "!!binary xx", "!!float abc", "!!int 1.5", "!!python/object:os.system x",
                          "? [a]", "[", "{a: 1", "'", "@", "`x`", "*undefined", "yes", "pets", "cuda:1", ""])
CYCLES = st.sampled_from(["&b {x: *b}", "&c {injection: *c}", "&d {a: {b: *d}}", "{x: {y: {z: {w: 1}}}}"])
WORDS = st.sampled_from([*FRAMEWORKS, *VARIANTS, *INJECTIONS, "crop", "hue", "gpu", "folder", "vit_small", ""])
SCALARS = st.none() | st.booleans() | st.integers() | st.just(10**400) | st.floats() | WORDS | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(NAMES, inner, max_size=3),
                      max_leaves=8)
GOOD = {"epochs": st.integers(1, 5), "batch_size": st.sampled_from([8, 256]), "image_size": st.sampled_from([32, 64]),
        "base_lr": st.floats(1e-4, 1.0), "augment.blur_p": st.floats(0, 1),
        "conditioning.encoder_depth": st.integers(0, 3), "conditioning.injection": st.sampled_from(list(INJECTIONS)),
        "augment.crop_scale": st.just([0.08, 1.0]),
        "conditioning.omega_keys": st.sampled_from([["crop"], ["crop", "color"], ["blur", "flip", "grayscale"]]),
        "backbone": st.sampled_from(["resnet_narrow", "resnet18", "vit_small"]), "seed": st.integers(0, 2**32 - 1)}
YAML_CHARS = st.sampled_from(list(":-[]{},#&*!|>'\"%@`?= \n\t.abcefinorstuxy0123456789") + ["é", "\x00"])


def yaml_text(value: object) -> str:
    """One-line (flow) YAML of a value."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, sort_keys=False, width=10**6).strip()


def nested(flat: dict) -> dict:
    """{'a.b': 1} -> {'a': {'b': 1}} (the sections of a config file)."""
    tree: dict = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if name and isinstance(tree.setdefault(section, {}), dict):
            tree[section][name] = value
        else:
            tree[key] = value
    return tree


@st.composite
def edits(draw: st.DrawFn) -> tuple[object, str]:
    """(key, value as raw YAML text); rarely a key that is not a string."""
    kind = draw(st.sampled_from(["extreme", "tricky", "section", "arbitrary"]))
    if kind == "extreme":
        if draw(st.booleans()):
            return draw(NUMERIC), draw(EXTREMES)
        return draw(LISTS), f"[{', '.join(draw(st.lists(EXTREMES | st.sampled_from(['0.5', '1']), max_size=5)))}]"
    if kind == "section":
        return draw(SECTIONS), draw(CYCLES | VALUES.map(yaml_text))
    key = draw(st.integers(-2, 2)) if draw(st.integers(0, 9)) == 0 else draw(NAMES)
    return key, draw(TRICKY) if kind == "tricky" else yaml_text(draw(VALUES))


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    config = {"framework": draw(st.sampled_from(list(FRAMEWORKS))), "variant": draw(st.sampled_from(list(VARIANTS)))}
    config.update(draw(st.fixed_dictionaries({}, optional=GOOD)))
    text = yaml.safe_dump(nested(config) if draw(st.booleans()) else config, sort_keys=False)
    for key, value in draw(st.lists(edits(), max_size=2)):
        text += f"{key}: {value}\n"
    mutation = draw(st.sampled_from(["none"] * 5 + ["cut", "splice", "noise"]))
    if mutation == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif mutation == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(YAML_CHARS, max_size=12)) + text[at:]
    elif mutation == "noise":
        text = draw(st.text(YAML_CHARS, max_size=80))
    return text


@st.composite
def override_texts(draw: st.DrawFn) -> str:
    """`key=value` overrides, or malformed ones (no `=`, no key, odd characters)."""
    key, value = draw(edits())
    form = draw(st.sampled_from(["good"] * 8 + ["no key", "no equals", "noise"]))
    if form == "noise":
        return draw(st.text(YAML_CHARS | st.just("="), max_size=16))
    return {"good": f"{key}={value}", "no key": f"={value}", "no equals": str(value)}[form]


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          database=None)
@given(text=config_texts(), encoding=st.sampled_from(["utf-8"] * 8 + ["latin-1", "utf-16"]),
       overrides=st.lists(override_texts(), max_size=2))
def test_fuzzed_yaml_and_overrides_give_a_config_or_a_config_error(text, encoding, overrides):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            config = load_config(path, overrides)
        except ConfigError as error:
            assert str(error)
            return
    assert set(config) == set(FIELDS) and len(experiment_hash(config)) > 0
    view_sampler(config)  # the augmentation settings are ones the sampler accepts


# ------------------------------------------------------------------------------------------------ missing/wrong data
def write_jpegs(folder: Path, count: int, seed: int) -> list[Path]:
    """`count` real 32 px noise JPEGs written with PIL."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=generator).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
        paths.append(folder / f"{i:03d}.jpg")
    return paths


@pytest.fixture
def image_folders(tmp_path: Path) -> tuple[Path, Path]:
    """A `folder` dataset root with 16 training JPEGs in two classes, one of them truncated; (root, that file)."""
    root = tmp_path / "images"
    files = write_jpegs(root / "train" / "cats", 8, seed=0) + write_jpegs(root / "train" / "dogs", 8, seed=1)
    write_jpegs(root / "test" / "cats", 1, seed=2)
    write_jpegs(root / "test" / "dogs", 1, seed=3)
    truncate(files[11])
    return root, files[11]


def pretrain_cli(tmp_path: Path, root: Path | str | None, *extra: str) -> int:
    config = tmp_path / "folder.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": "folder", "data_root": None if root is None else str(root),
                                      "image_size": 32, "batch_size": 4, "max_steps": None, "epochs": 1}))
    return cli_main(["pretrain", str(config), "--out", str(tmp_path / "run"), "--quiet", *extra])


@pytest.mark.parametrize("problem,named", [
    ("no root", "dataset 'folder': no data root was given"),
    ("missing root", "the root folder does not exist (tried root {root})"),
    ("empty class folder", "class folder {root}/train/birds holds no images"),
])
def test_missing_data_is_one_message_naming_the_folder(tmp_path, capsys, monkeypatch, image_folders, problem, named):
    monkeypatch.delenv("CASSLE_DATA_ROOTS", raising=False)
    root, _ = image_folders
    if problem == "missing root":
        root = tmp_path / "nowhere"
    elif problem == "empty class folder":
        (root / "train" / "birds").mkdir()
    assert pretrain_cli(tmp_path, None if problem == "no root" else root) == 1
    err = capsys.readouterr().err
    assert named.format(root=root) in err and "Traceback" not in err and "--set data_root=" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_stops_pretraining_naming_the_file(tmp_path, capsys, monkeypatch, image_folders, workers):
    monkeypatch.delenv("CASSLE_SKIP_CORRUPT", raising=False)
    root, bad = image_folders
    assert pretrain_cli(tmp_path, root, "--set", f"num_workers={workers}") == 1
    err = capsys.readouterr().err
    assert err.startswith("cassle: error: ") and f"cannot read image {bad}" in err and "CASSLE_SKIP_CORRUPT=1" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_allowed_skipping_reports_the_unreadable_image_and_pretrains_on_the_rest(tmp_path, monkeypatch,
                                                                                image_folders):
    root, bad = image_folders
    monkeypatch.setenv("CASSLE_SKIP_CORRUPT", "1")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\)") as record:
        assert pretrain_cli(tmp_path, root) == 0
    assert any(str(bad) in str(w.message) for w in record)
    assert read_json(tmp_path / "run" / "metrics.json")["steps"] == 15 // 4  # one epoch of the 15 readable images


def test_skip_choice_reaches_evaluation_datasets_and_bad_values_are_refused(monkeypatch, image_folders):
    root, bad = image_folders
    monkeypatch.setenv("CASSLE_SKIP_CORRUPT", "yes")
    with pytest.warns(UserWarning, match="skipped 1"):
        dataset = get_dataset("folder").load(root, "trainval")
    assert len(dataset) == 15 and [path for path, _ in dataset.skipped] == [bad]
    monkeypatch.setenv("CASSLE_SKIP_CORRUPT", "sometimes")
    with pytest.raises(ValueError, match=r"CASSLE_SKIP_CORRUPT='sometimes'.*expected 1, true, yes or on"):
        get_dataset("folder").load(root, "trainval")


def test_unreadable_image_of_a_torchvision_dataset_is_named(tmp_path):
    """DTD (a file list, trainval = train + val concatenated) and Caltech-101 (opened lazily) name the file."""
    base = tmp_path / "dtd" / "dtd"
    for name in ("banded", "woven"):
        write_jpegs(base / "images" / name, 2, seed=len(name))
    (base / "labels").mkdir()
    for split, index in (("train", 0), ("val", 1), ("test", 1)):
        (base / "labels" / f"{split}1.txt").write_text(f"banded/{index:03d}.jpg\nwoven/{index:03d}.jpg\n")
    truncate(base / "images" / "woven" / "001.jpg")
    trainval = get_dataset("dtd").load(tmp_path, "trainval")
    with pytest.raises(CorruptImageError, match=re.escape(f"cannot read image {base / 'images/woven/001.jpg'}")):
        [trainval[i] for i in range(len(trainval))]

    categories = tmp_path / "caltech101" / "101_ObjectCategories"
    for name in ("BACKGROUND_Google", "ant", "bee"):
        (categories / name).mkdir(parents=True)
        for i in range(1, 34):
            Image.new("L", (5, 4), 80).save(categories / name / f"image_{i:04d}.jpg")
    bad = categories / "bee" / "image_0007.jpg"
    truncate(bad)
    splits = [get_dataset("caltech101").load(tmp_path, split) for split in ("trainval", "test")]
    with pytest.raises(CorruptImageError, match=re.escape(f"cannot read image {bad}")):
        [split[i] for split in splits for i in range(len(split))]


# ------------------------------------------------------------------------------------------------ disk
def run_child(script: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            env=env, text=True)


def test_killed_checkpoint_save_leaves_no_file_that_is_read_later(tmp_path):
    """SIGKILL while CheckpointManager.save is serialising step 8: step 4 stays the latest, the temp is ignored."""
    child = run_child("""
        import sys, time, torch
        from cassle.apps.engine.checkpoint import CheckpointManager

        class Stall:  # pickled inside torch.save, after the temporary file was created
            def __reduce__(self):
                print("saving", flush=True)
                time.sleep(120)

        manager = CheckpointManager(sys.argv[1])
        manager.save({"w": torch.full((1000,), 4.0)}, 4)
        manager.save({"w": torch.full((250_000,), 8.0), "stall": Stall()}, 8)
    """, str(tmp_path))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "saving"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt-8.pt.")  # killed mid-save for real
    assert not (tmp_path / "ckpt-8.pt").exists()
    manager = CheckpointManager(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state, step = manager.load_latest()  # type: ignore[misc]
    assert step == 4 and torch.equal(state["w"], torch.full((1000,), 4.0))
    manager.save({"w": torch.zeros(1)}, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-4.pt", "ckpt-4.pt.sha256", "ckpt-6.pt",
                                                          "ckpt-6.pt.sha256"]


def test_kills_at_random_moments_never_leave_a_torn_file(tmp_path):
    """A writer rewriting a 4 MB self-checking file in a loop, killed at random moments (seeded): the destination is
    always one complete version."""
    target = tmp_path / "result.bin"
    moments = random.Random(0)
    for _ in range(5):
        child = run_child("""
            import hashlib, os, sys
            from cassle.core.io import atomic_write_bytes
            for i in range(10**9):
                body = bytes([i % 251]) * (4 << 20)
                atomic_write_bytes(sys.argv[1], hashlib.sha256(body).digest() + body)
                print(i, flush=True)
        """, str(target))
        assert child.stdout is not None
        for _ in range(moments.randint(1, 4)):
            child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        child.wait()
        data = target.read_bytes()
        assert len(data) == 32 + (4 << 20) and hashlib.sha256(data[32:]).digest() == data[:32]
    assert all(p == target or p.name.startswith(".result.bin.") for p in tmp_path.iterdir())


MODULE_WRITERS = {"torch": {"save"}, "np": {"save", "savez", "savez_compressed"}, "json": {"dump"},
                  "pickle": {"dump"}, "yaml": {"dump", "safe_dump"}}
METHOD_WRITERS = {"savefig", "to_csv", "to_json", "to_parquet", "to_pickle", "write_text", "write_bytes"}


def unsafe_writes(source: str) -> list[str]:
    """Calls that write a file other than through cassle.core.io: `open` to write or append (lock files aside), the
    module writers above with a file argument and the method writers, unless they write to an `atomic_open` handle."""
    tree = ast.parse(source)
    atomic = {item.optional_vars.id for node in ast.walk(tree) if isinstance(node, ast.With) for item in node.items
              if isinstance(item.optional_vars, ast.Name) and "atomic_open" in ast.unparse(item.context_expr)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function, arguments = node.func, [*node.args, *(k.value for k in node.keywords)]
        to_atomic = any(isinstance(a, ast.Name) and a.id in atomic for a in arguments)
        if isinstance(function, ast.Name) and function.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                  None)
            writes = isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
            unsafe = writes and "lock" not in ast.unparse(node.args[0])
        elif isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) \
                and function.attr in MODULE_WRITERS.get(function.value.id, ()):
            unsafe = len(arguments) >= 2 and not to_atomic  # one argument: json/yaml/pickle return text
        else:
            unsafe = isinstance(function, ast.Attribute) and function.attr in METHOD_WRITERS and bool(arguments) \
                and not to_atomic  # to_csv() without a path returns text
        if unsafe:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_unsafe_write_detector_flags_direct_writes_and_allows_atomic_ones():
    flagged = unsafe_writes("torch.save(x, path)\nPath(p).write_text('a')\nopen(p, 'w')\nfig.savefig('a.png')\n"
                            "json.dump(obj, open(p, 'wb'))\nopen(log, mode='a')\n")
    assert len(flagged) == 7, flagged
    assert unsafe_writes("with atomic_open(p, 'wb') as h:\n    torch.save(x, h)\n    json.dump(obj, h)\n"
                         "text = json.dumps(x)\nopen(p)\nopen(lock_path, 'w')\ndf.to_csv()\nmanager.save(s, 4)\n"
                         "yaml.safe_dump(config)\n") == []


def test_every_file_cassle_writes_goes_through_the_atomic_writers():
    """Results, checkpoints, tables and figures: no module outside cassle/core/io.py writes a file directly."""
    offenders = {str(path.relative_to(REPO)): found for path in sorted((REPO / "cassle").rglob("*.py"))
                 if path != REPO / "cassle" / "core" / "io.py"
                 for found in [unsafe_writes(path.read_text(encoding="utf-8"))] if found}
    assert not offenders, ("write these through cassle.core.io (atomic_open, atomic_write_text, write_json, "
                           f"atomic_torch_save, atomic_savefig): {offenders}")


def test_every_test_named_in_docs_reliability_exists():
    """docs/reliability.md proves each guarantee by a test name; a renamed or removed test must update it."""
    docs = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", docs))
    assert len(cited) > 20
    missing = [f"{file}::{name}" for file, name in sorted(cited)
               if not (REPO / file).exists() or f"def {name}(" not in (REPO / file).read_text(encoding="utf-8")]
    assert not missing, f"docs/reliability.md cites tests that do not exist: {missing}"
