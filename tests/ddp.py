"""Run a function in several CPU processes joined by a gloo process group and collect what each rank returns.

Usage (pytest puts tests/ on sys.path): `from ddp import run_distributed`, then
`results = run_distributed(fn, *args)`. Each process sets the launcher's environment variables,
calls `cassle.core.distributed.init_from_env(device="cpu")` (so the library's own start-up path is exercised),
runs `fn(*args)` and hands its return value back through a file: `results[r]` is what rank r returned.
A process that raises fails the call with its traceback; a job that outlives `timeout` seconds is killed
and raises TimeoutError instead of hanging the test run.

Processes are forked: they inherit the imported modules (a spawned rank would re-import torch, which
costs seconds per test on small CI machines) and `fn` need not be picklable. Each rank runs torch with one
thread, as DataLoader workers do, which keeps forking after torch has run safe; ranks never touch CUDA.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cassle.core.distributed import init_from_env

EnvBuilder = Callable[[int, int, int], dict[str, str]]
_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for one process on a single node."""
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world_size),
    }


def _worker(
    rank: int,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    world_size: int,
    port: int,
    env: EnvBuilder,
    out_dir: str,
) -> None:
    for name in _LAUNCHER_VARIABLES:  # a launcher around the test run must not leak into the ranks
        os.environ.pop(name, None)
    os.environ.update(env(rank, world_size, port))
    torch.set_num_threads(1)
    init_from_env(device="cpu")
    try:
        torch.save(fn(*args), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    timeout: float = 120.0,
    env: EnvBuilder = torchrun_env,
) -> list[Any]:
    """Run `fn(*args)` on `world_size` gloo ranks (child processes) and return each rank's result."""
    with tempfile.TemporaryDirectory(prefix="cassle-ddp-") as out_dir:
        context = mp.start_processes(
            _worker,
            args=(fn, args, world_size, free_port(), env, out_dir),
            nprocs=world_size,
            join=False,
            start_method="fork",
        )
        deadline = time.monotonic() + timeout
        while not context.join(timeout=max(deadline - time.monotonic(), 0.0)):
            if time.monotonic() >= deadline:
                for process in context.processes:
                    process.kill()
                    process.join()
                raise TimeoutError(f"{fn.__name__} did not finish on {world_size} ranks within {timeout} s")
        return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
