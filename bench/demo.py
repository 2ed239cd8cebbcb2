"""Wall time of the demo DAG (`make demo`: config/demo.yaml on the local profile) against its budget of 10 minutes.

The baseline measured in the same run is one job of the DAG run alone (`cassle pretrain` of the demo's MoCo-v2 CASSLE
run, process start included): the ratio says how many such jobs the whole DAG costs.

    python bench/demo.py [--cores 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cassle.apps.plan import plan_runs
from cassle.core.provenance import device_description, git_sha

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 600.0


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "demo.json")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    runs = plan_runs(config)
    one = next(run for run in runs.values() if run.config["framework"] == "mocov2" and run.config["variant"] == "cassle")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        single = timed([sys.executable, "-m", "cassle", "pretrain", *one.pretrain_args(), "--out",
                        str(work / "single"), "--quiet"], work)
        demo = timed([sys.executable, "-m", "cassle", "demo", "--workdir", str(work), "--cores", str(args.cores)], work)
    record = {
        "benchmark": "demo", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_sha(),
        "device": device_description(), "cores": args.cores, "pretrain_runs": len(runs),
        "demo_s": demo, "single_pretrain_job_s": single, "ratio_demo_to_single_job": demo / single,
        "budget_s": BUDGET_S, "within_budget": demo <= BUDGET_S,
    }
    print(f"| measure | value |\n|---|---|\n| demo DAG wall time ({args.cores} cores) | {demo:.0f} s |\n"
          f"| one pretraining job alone | {single:.1f} s |\n| ratio | {demo / single:.1f}x |\n"
          f"| budget | {BUDGET_S:.0f} s ({'met' if demo <= BUDGET_S else 'MISSED'}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
