"""The machine a benchmark ran on: CPU name, cores, and its measured fp32/bf16 matmul peak (GFLOP/s), so that wall
times from machines of the same kind but different speed can be compared (the demo's budget is stated for a
~190 GFLOP/s fp32 machine)."""

from __future__ import annotations

import os
import platform
import time

import torch


def matmul_gflops(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of `size`^3 matmuls in `dtype` over about `seconds`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """{"cpu", "cores", "threads", "fp32_gflops", "bf16_gflops", "gpu"} of this machine, measured now."""
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "fp32_gflops": round(matmul_gflops(torch.float32), 1),
            "bf16_gflops": round(matmul_gflops(torch.bfloat16), 1),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


if __name__ == "__main__":
    print(describe())
