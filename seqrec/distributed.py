"""Data-parallel training over several processes with PyTorch's own engine (``torch.distributed``,
``DistributedDataParallel``): NCCL between GPUs, Gloo between CPU processes.

How a run is split (``seqrec train --devices N``, or ``torchrun --nproc-per-node N -m seqrec train ...``):

- every process builds the same epoch of global batches (one batching generator, seeded alike) and trains
  on its shard of each: rows ``rank, rank + N, ...`` (:func:`shard`); ``batch_size`` stays the global batch;
- DDP all-reduces (averages) the gradients during the backward pass; each process scales its loss by its
  share of the global batch's training positions, so the averaged gradient is the gradient of the global
  batch's mean loss, as in one process (:func:`position_share`);
- negatives and dropout come from per-process generators (seed and rank), the batches from the shared one;
- validation is sharded the same way and the per-row means combined exactly (:func:`combine_means`), so
  every process takes the same early-stopping decision; only rank 0 writes the run directory.

With one process none of this runs and training is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys

import torch
import torch.distributed as dist

from seqrec.errors import ConfigError, SeqrecError

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, number of processes) of this process; (0, 1) outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def start(device: str) -> str:
    """Join the process group that ``torchrun`` described in the environment (``WORLD_SIZE`` > 1), once;
    returns the device this process trains on (``cuda:LOCAL_RANK`` for a CUDA run). Outside torchrun: a no-op
    returning ``device``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return device
    cuda = device.startswith("cuda")
    if cuda:  # (the caller has checked that CUDA is there)
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError(f"process {local} of this machine has no GPU: {torch.cuda.device_count()} visible; "
                              "use fewer --devices")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        log.info("process %d of %d (%s)", dist.get_rank(), dist.get_world_size(), "nccl" if cuda else "gloo")
        if dist.get_rank() > 0:  # one process reports progress
            logging.getLogger("seqrec").setLevel(logging.WARNING)
    return device


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch, rank: int, size: int):
    """This process's rows of a training ``batch`` (a dataclass whose tensor fields hold one row per
    sequence): rows ``rank::size`` of every such field; other fields (e.g. the loss weight) are kept."""
    n = batch.n_sequences
    changes = {f.name: getattr(batch, f.name)[rank::size] for f in dataclasses.fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor) and len(getattr(batch, f.name)) == n}
    return dataclasses.replace(batch, **changes)


def position_share(part, whole) -> float:
    """The factor that turns a shard's mean loss into its part of the global batch's mean once DDP has
    averaged the gradients over the processes: ``size · positions(part) / positions(whole)``."""
    return world()[1] * part.n_positions / max(whole.n_positions, 1)


def combine_means(means: dict[str, float], n_rows: int) -> dict[str, float]:
    """Per-row means computed on each process's rows -> the means over all rows (identical everywhere)."""
    if world()[1] == 1:
        return means
    names = sorted(means)
    values = torch.tensor([means[k] * n_rows for k in names] + [float(n_rows)], dtype=torch.float64)
    dist.all_reduce(values)
    total = max(values[-1].item(), 1.0)
    return {k: values[i].item() / total for i, k in enumerate(names)}


def agree(values: list[float], op: str = "max") -> list[float]:
    """The same numbers on every process (the max, or the mean)."""
    if world()[1] == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    if op == "mean":
        tensor /= world()[1]
    return tensor.tolist()


def launch(args: list[str], n: int, module: str = "seqrec") -> int:
    """Run ``python -m module args`` in ``n`` processes through ``torchrun`` (one machine); returns 0, or raises
    a SeqrecError naming the failed process and its exit code when any process fails (torchrun then stops
    the others)."""
    if n < 1:
        raise ConfigError(f"--devices must be at least 1, got {n}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
               "--module", module, *args]
    log.info("launching %d processes: %s", n, " ".join(command[1:]))
    lines = []
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, bufsize=1) as process:
        for line in process.stderr:  # passed on as it comes, torchrun's OMP_NUM_THREADS notice left out
            lines.append(line)
            if not any(notice in line for notice in _NOTICES):
                sys.stderr.write(line)
    if process.returncode:
        failed = _failed_rank(lines)
        raise SeqrecError(f"distributed training failed: {failed or 'a process'} failed first; torchrun stopped "
                          f"the others and exited with code {process.returncode} (the error is printed above)")
    return 0


def _failed_rank(lines: list[str]) -> str | None:
    """'process R (exit code C)' from the root cause in torchrun's failure summary."""
    root = next((i for i, line in enumerate(lines) if line.startswith("Root Cause")), None)
    fields = {}
    for line in lines[root + 1:] if root is not None else []:
        name, _, value = line.partition(":")
        if name.strip() in ("rank", "exitcode") and name.strip() not in fields:
            fields[name.strip()] = value.split("(")[0].strip()
    if "rank" not in fields:
        return None
    return f"process {fields['rank']}" + (f" (exit code {fields['exitcode']})" if "exitcode" in fields else "")


_NOTICES = ("Setting OMP_NUM_THREADS", "*****")  # one thread per process is what we want
