"""The matmul ceiling of the machine a benchmark runs on, measured there (never a hard-coded figure)."""

from __future__ import annotations

import functools
import time

import torch


@functools.cache
def matmul_ceiling(precision: str = "fp32", size: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the best of ``repeats`` [size, size] x [size, size]ᵀ CPU products at the current thread
    count, in ``precision`` ("fp32" or "bf16"). The second operand is transposed, as ``nn.Linear`` and the
    output layers use their weights (on some CPUs a bf16 product of two row-major matrices takes a slow
    path that runs ~50x slower)."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(a, b.T)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        torch.mm(a, b.T)
        best = min(best, time.perf_counter() - tick)
    return round(2 * size ** 3 / best / 1e9, 1)


if __name__ == "__main__":
    print({p: matmul_ceiling(p) for p in ("fp32", "bf16")}, f"at {torch.get_num_threads()} threads")
