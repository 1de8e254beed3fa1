"""What the benchmark scripts share: the machine they ran on (CPU name, cores, measured fp32/bf16 matmul peak, so that
wall times from machines of the same kind but different speed can be compared; the demo's budget is stated for a
~190 GFLOP/s fp32 machine), the DiT train step they time, and medians of alternating calls.

The scripts import it as `from common import ...`: a script's own folder is first on `sys.path` when it runs. torch
is imported where it is used, so that a script's parent process (which runs its measurements in fresh worker
processes) stays light.

    python benchmarks/common.py     # this machine's description
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The recipe the ablations (bench_diffit, bench_objectives) were measured with, on top of the demo config: lr 3e-4, no
# clipping. The demo configs have trained at lr 1e-3 with clipping at 1 since; rows that change the lr override it.
RECIPE_LR_3E4 = ["--learning-rate", "3e-4", "--max-grad-norm", "0"]
# evaluate.py's --scheduler short names as the results tables print them (no name: the pipeline's own, DDPM)
SAMPLER_LABELS = {"dpm": "DPM-Solver++", "ddim": "DDIM", "euler": "Euler", "heun": "Heun", "ddpm": "DDPM"}

#################################################################################
#                                  The machine                                  #
#################################################################################


def matmul_gflops(dtype: torch.dtype | None = None, size: int = 1024, seconds: float = 2.0) -> float:
    """Best sustained GFLOP/s of `size`^3 matmuls in `dtype` (default float32) over about `seconds`."""
    import torch

    dtype = dtype or torch.float32
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
    import torch

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "fp32_gflops": round(matmul_gflops(torch.float32), 1),
            "bf16_gflops": round(matmul_gflops(torch.bfloat16), 1),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


#################################################################################
#                                     Timing                                    #
#################################################################################


def median(values: list[float]) -> float:
    """The middle value (the upper one of an even count), as every table here reports."""
    return sorted(values)[len(values) // 2]


def alternate(fns: dict[str, Callable], repeats: int, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each callable, called in turn (A, B, C, A, B, C, ...) so that machine noise hits all alike;
    with `warmup`, each is called once first (allocations, AdamW state, cached tensors)."""
    if warmup:
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: median(ts) for k, ts in times.items()}


#################################################################################
#                                 The train step                                #
#################################################################################


def build(impl: str, preset: str, sample_size: int | None):
    """A DiT preset as diffit_hf `DiTModel` (`impl="diffit_hf"`) or diffusers `DiTTransformer2DModel`, with the
    same random weights statistics."""
    import torch
    from diffusers import DiTTransformer2DModel

    from diffit_hf import create_model
    from diffit_hf.models.presets import preset_config

    model = create_model(preset, **({"sample_size": sample_size} if sample_size else {}))
    if impl == "diffusers":
        _, cfg = preset_config(preset)
        model = DiTTransformer2DModel(
            num_attention_heads=cfg["num_attention_heads"], attention_head_dim=cfg["attention_head_dim"],
            in_channels=cfg["in_channels"], out_channels=2 * cfg["in_channels"], num_layers=cfg["num_layers"],
            sample_size=sample_size, patch_size=cfg["patch_size"], num_embeds_ada_norm=cfg["num_classes"],
        )
    with torch.no_grad():  # same (random, non-zero) weights statistics for both
        for p in model.parameters():
            p.normal_(std=0.02)
    return model


def make_step(impl: str, preset: str, sample_size: int | None, batch: int, precision: str,
              attention_backend: str = "auto", compile_model: bool = False):
    """A closure running one train step (forward, MSE, backward, AdamW) of a freshly built model; `attention_backend`
    picks DiffiT's biased-attention kernel (`diffit_hf.models.layers`) for this step, `compile_model` runs the
    forward through `torch.compile` (as `train_latent.py --compile` does)."""
    import torch

    torch.manual_seed(0)
    model = build(impl, preset, sample_size).train()
    return train_step(model, batch, precision, attention_backend, torch.compile(model) if compile_model else model)


def train_step(model, batch: int, precision: str, attention_backend: str = "auto", forward=None,
               unbiased_backend: str = "auto", optimizer: str = "default"):
    """A closure running one train step (forward through `forward`, default the model; MSE, backward, AdamW) of
    `model` on fixed random inputs shaped by its config; `attention_backend` as in `make_step` (biased attention),
    `unbiased_backend` the kernel of attention without a bias (`layers.attention_backend`). `optimizer`: "default"
    (torch's default AdamW, as diffusers' examples use; a loop over the parameters on a CPU), "training" (what
    `train_latent.py` steps: its AdamW, fused where it can be, then its EMA update) or "training-before" (the same
    with torch's default AdamW and diffusers' per-parameter EMA loop, as it was before 2026-12-07)."""
    import torch

    from diffit_hf.models import layers
    from diffit_hf.training.ema import make_ema
    from diffit_hf.training.runtime import adamw

    if optimizer not in ("default", "training", "training-before"):
        raise ValueError(f"Unknown optimizer {optimizer!r}; valid choices are default, training, training-before.")
    forward = forward or model
    opt = (adamw(model.parameters(), 1e-4) if optimizer == "training" else
           torch.optim.AdamW(model.parameters(), lr=1e-4))
    ema = make_ema(model, 0.9999) if optimizer != "default" else None
    if ema is not None:
        ema.foreach = optimizer == "training"
    cfg = model.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    num_classes = cfg.get("num_classes", cfg.get("num_embeds_ada_norm", 0))
    x = torch.randn(batch, cfg.in_channels, size, size)
    t = torch.randint(0, 1000, (batch,))
    y = torch.randint(0, num_classes, (batch,)) if num_classes else None
    target = torch.randn(batch, model.out_channels, size, size)

    def step():
        layers.biased_attention_backend, layers.attention_backend = attention_backend, unbiased_backend
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = forward(x, t, y).sample
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.step(model.parameters())

    return step


if __name__ == "__main__":
    print(describe())
