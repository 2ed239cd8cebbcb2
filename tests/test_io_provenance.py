"""Atomic writes, JSON/CSV helpers, the kill-safe history writer, and provenance records."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cassle.core import io as cio
from cassle.core import identity
from cassle.core import provenance as prov

REPO = Path(__file__).resolve().parents[1]


def _dir_listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_and_text_replace_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.bin"
    cio.atomic_write_bytes(target, b"first")
    cio.atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    cio.atomic_write_text(tmp_path / "t.txt", "x\r\ny\n")
    assert (tmp_path / "t.txt").read_bytes() == b"x\r\ny\n"  # no newline translation
    assert _dir_listing(tmp_path) == ["sub", "t.txt"]  # no temp file left behind
    assert _dir_listing(tmp_path / "sub") == ["a.bin"]


def test_exception_inside_write_leaves_destination_untouched(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with cio.atomic_open(target, "w") as handle:
            handle.write("new partial content")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _dir_listing(tmp_path) == ["result.json"]


def test_failing_torch_save_leaves_destination_untouched(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    cio.atomic_torch_save({"w": torch.arange(3)}, target)
    before = target.read_bytes()
    # A big tensor is serialised first, then pickling the lambda fails half-way through the file.
    with pytest.raises(Exception):
        cio.atomic_torch_save({"w": torch.zeros(100_000), "f": lambda: 0}, target)
    assert target.read_bytes() == before
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))
    assert _dir_listing(tmp_path) == ["model.pt"]


def test_killed_writer_leaves_old_content(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")
    script = textwrap.dedent(
        """
        import sys, time
        from cassle.core.io import atomic_open
        with atomic_open(sys.argv[1], "wb") as handle:
            handle.write(b"x" * 100000)
            handle.flush()
            print("ready", flush=True)
            time.sleep(120)
        """
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
        leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(leftovers) == 1 and leftovers[0].stat().st_size == 100000  # mid-write for real
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert target.read_text() == "old"


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # spans several read chunks
    (tmp_path / "f").write_bytes(data)
    assert cio.file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- JSON


def test_write_json_sorted_indented_and_converts_numpy_torch(tmp_path: Path) -> None:
    obj = {"b": np.float32(0.5), "a": (1, torch.tensor(2)), "c": {2: np.arange(2)}, "p": Path("x/y")}
    cio.write_json(tmp_path / "m.json", obj)
    text = (tmp_path / "m.json").read_text()
    expected = {"a": [1, 2], "b": 0.5, "c": {"2": [0, 1]}, "p": "x/y"}
    assert text == json.dumps(expected, sort_keys=True, indent=2) + "\n"
    assert cio.read_json(tmp_path / "m.json") == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float64("-inf"), torch.tensor(float("nan"))])
def test_write_json_rejects_non_finite_naming_location(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match=r"m\.json.*non-finite.*\$\.metrics\.loss\[1\]"):
        cio.write_json(tmp_path / "m.json", {"metrics": {"loss": [1.0, bad]}})
    assert not (tmp_path / "m.json").exists()


def test_write_json_rejects_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"object at \$\.x"):
        cio.write_json(tmp_path / "m.json", {"x": object()})


def test_read_json_rejects_nan_literal(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text('{"loss": NaN}')
    with pytest.raises(ValueError, match=r"m\.json.*NaN"):
        cio.read_json(tmp_path / "m.json")


# ---------------------------------------------------------------- CSV


def test_write_csv_rows_matches_csv_module(tmp_path: Path) -> None:
    rows = [{"step": 0, "loss": 1.5}, {"step": 1, "acc": 0.25}]
    cio.write_csv_rows(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == "step,loss,acc\n0,1.5,\n1,,0.25\n"
    with pytest.raises(ValueError, match=r"\['acc'\].*fieldnames"):
        cio.write_csv_rows(tmp_path / "u.csv", rows, fieldnames=["step", "loss"])


def test_history_appends_flush_and_resume_truncates(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    writer = cio.HistoryWriter(path, ["step", "loss"])
    for step in range(5):
        writer.append({"step": step, "loss": step / 4})
        # Flushed after each row: another reader sees it before close.
        assert len(cio.read_csv_rows(path)) == step + 1
    writer.close()
    with open(path, "a") as handle:  # a kill mid-row leaves a torn last line
        handle.write("5,0.1")
    with cio.HistoryWriter(path, ["step", "loss"], resume_step=2) as resumed:
        assert [r["step"] for r in cio.read_csv_rows(path)] == ["0", "1", "2"]
        resumed.append({"step": 3, "loss": 9.0})
    assert cio.read_csv_rows(path)[-1] == {"step": "3", "loss": "9.0"}
    assert path.read_text().count("\n") == 5  # header + 4 rows, every line complete
    cio.HistoryWriter(path, ["step", "loss"]).close()  # no resume step: a fresh history
    assert path.read_text() == "step,loss\n"


def test_history_rejects_other_columns_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    with cio.HistoryWriter(path, ["step", "loss"]) as writer:
        writer.append({"step": 0, "loss": 1.0})
        with pytest.raises(ValueError, match=r"\['acc'\]"):
            writer.append({"step": 1, "acc": 1.0})
    with pytest.raises(ValueError, match=r"columns \['step', 'loss'\], expected \['step', 'acc'\]"):
        cio.HistoryWriter(path, ["step", "acc"], resume_step=0)
    with pytest.raises(ValueError, match="step_key 'epoch'"):
        cio.HistoryWriter(tmp_path / "h2.csv", ["step"], step_key="epoch")
    with pytest.raises(ValueError, match="is closed"):
        writer.append({"step": 1})


# ---------------------------------------------------------------- provenance


def test_config_hash_ignores_key_order_and_number_spelling() -> None:
    a = {"lr": 0.0001, "epochs": 500, "nested": {"x": [1, 2.0], "y": (3,)}}
    b = {"nested": {"y": [3.0], "x": [1.0, 2]}, "epochs": 500.0, "lr": 1e-4}
    assert identity.config_hash(a) == identity.config_hash(b)
    # Independent reference: sha256 of the hand-written canonical text.
    text = '{"epochs":500,"lr":0.0001,"nested":{"x":[1,2],"y":[3]}}'
    assert identity.canonical_json(a) == text
    assert identity.config_hash(a) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert identity.config_hash({**a, "lr": 0.0002}) != identity.config_hash(a)
    assert identity.config_hash({**a, "flag": True}) != identity.config_hash({**a, "flag": 1})


def test_config_hash_errors() -> None:
    with pytest.raises(ValueError, match=r"config\.lr"):
        identity.config_hash({"lr": float("nan")})
    with pytest.raises(TypeError, match="mapping"):
        identity.config_hash([1, 2])  # type: ignore[arg-type]


def test_run_name() -> None:
    config = {"framework": "moco", "variant": "cassle", "lr": 0.03}
    name = identity.run_name("moco", "cassle", config)
    assert name == f"moco-cassle-{identity.config_hash(config)[:8]}"
    assert name == identity.run_name("moco", "cassle", dict(reversed(config.items())))
    with pytest.raises(ValueError, match="variant 'cas-sle'"):
        identity.run_name("moco", "cas-sle", config)


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_sha_and_dirty(tmp_path: Path) -> None:
    assert prov.git_sha(tmp_path) is None and prov.git_dirty(tmp_path) is None  # not a checkout
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    (repo / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    # Independent reference: the ref file git wrote.
    expected = (repo / ".git" / "refs" / "heads" / "main").read_text().strip()
    assert prov.git_sha(repo) == expected
    assert prov.git_dirty(repo) is False
    (repo / "untracked.txt").write_text("u")
    assert prov.git_dirty(repo) is False
    (repo / "f.txt").write_text("b")
    assert prov.git_dirty(repo) is True


def test_package_versions_and_device() -> None:
    versions = prov.package_versions()
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(versions) == {"python", "torch", "torchvision", "numpy", "cassle", "cuda", "cudnn"}
    device = prov.device_description()
    assert device.startswith("cuda:" if torch.cuda.is_available() else ("cpu:", "mps:"))


def test_provenance_record(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"lr": 0.03}
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    record = prov.provenance(config, seed=7)
    assert record["config_hash"] == identity.config_hash(config) and record["seed"] == 7
    assert "slurm_job_id" not in record
    assert record["time_utc"].endswith("+00:00")
    json.dumps(record, allow_nan=False)  # the record is plain JSON
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    assert prov.provenance(config, seed=7)["slurm_job_id"] == "12345"
