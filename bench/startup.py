"""What planning costs before any job runs: a Snakemake dry run of a workflow config and `cassle launch`'s checks.

Snakemake plans the DAG at every start (a run, a rerun, `--unlock`, a dry run), and `cassle launch` checks each
command before it submits it; neither needs torch. The baselines measured in the same run: Snakemake's own start
(`snakemake --version`), the interpreter's (`python -c pass`) and the import of torch + torchvision that planning
avoids. Median of `--repeat` runs each.

    python bench/startup.py [--config config/demo.yaml] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_time(command: list[str], cwd: Path, repeat: int) -> float:
    """Median wall time of `command` over `repeat` runs (each must succeed)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "demo.yaml")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "startup.json")
    args = parser.parse_args()
    python = [sys.executable]
    snakemake = [*python, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        commands = {
            "python -c pass": [*python, "-c", "pass"],
            "import torch, torchvision (avoided)": [*python, "-c", "import torch, torchvision"],
            "snakemake --version": [*snakemake, "--version"],
            f"snakemake -n ({args.config.name})": [*snakemake, "--configfile", str(args.config.resolve()), "-n",
                                                    "-q"],
            "cassle launch --check-only -- pretrain": [*python, "-m", "cassle", "launch", "--check-only", "--",
                                                       "pretrain", "--set", "framework=mocov2", "--set",
                                                       "variant=cassle", "--set", "max_steps=2", "--out",
                                                       str(work / "run")],
            "cassle launch --check-only -- eval linear": [*python, "-m", "cassle", "launch", "--check-only", "--",
                                                          "eval", "linear", str(work / "run"), "--dataset",
                                                          "cifar10", "--out", str(work / "eval")],
        }
        seconds = {name: median_time(command, work, args.repeat) for name, command in commands.items()}
    dry_run = seconds[f"snakemake -n ({args.config.name})"]
    planning = dry_run - seconds["snakemake --version"]
    avoided = seconds["import torch, torchvision (avoided)"] - seconds["python -c pass"]
    print("| command | median wall time |\n|---|---|")
    for name, value in seconds.items():
        print(f"| `{name}` | {value:.2f} s |")
    print(f"\nplanning beyond Snakemake's own start: {planning:.2f} s; the torch + torchvision import it avoids: "
          f"{avoided:.2f} s ({avoided / planning:.1f}x the planning itself)")
    record = {"benchmark": "startup", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": str(args.config), "repeat": args.repeat, "seconds": seconds, "planning_s": planning,
              "avoided_import_s": avoided}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
