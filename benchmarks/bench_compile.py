"""Eager vs `torch.compile` train step (forward + MSE + backward + AdamW), DiT-S/2 and DiffiT-S/2, side by side.

Each (model, latent, precision) runs in a fresh subprocess with an empty inductor cache, so the first compiled step
pays the whole cold compile (forward and backward graphs). Then eager and compiled steps alternate in that process
and the medians are compared. `amortised after` = the steps after which compiling has paid for its cold start:
(cold step - compiled step) / (eager step - compiled step).

    python benchmarks/bench_compile.py            # writes benchmarks/results/bench_compile.{json,md}
    python benchmarks/bench_compile.py --quick    # fewer timed steps
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import alternate, cpu_name, make_step  # the same train step as bench_models

RESULTS = Path(__file__).parent / "results"


def compile_worker(preset: str, sample_size: int, batch: int, precision: str, steps: int, threads: int) -> dict:
    """Cold compiled step, then alternating eager/compiled steps; seconds."""
    import torch

    torch.set_num_threads(threads)
    eager = make_step("diffit_hf", preset, sample_size, batch, precision)
    compiled = make_step("diffit_hf", preset, sample_size, batch, precision, compile_model=True)
    eager()  # warm-up (allocations, AdamW state)
    start = time.perf_counter()
    compiled()  # traces and compiles the forward and backward graphs
    cold = time.perf_counter() - start
    compiled()  # second call: anything left to compile (e.g. a recompile on grad mode) happens here
    med = alternate({"eager": eager, "compiled": compiled}, steps, warmup=False)
    return {"cold_step_s": cold, "eager_step_s": med["eager"], "compiled_step_s": med["compiled"]}


def run_worker(**kwargs) -> dict:
    with tempfile.TemporaryDirectory() as cache:  # an empty inductor cache: a truly cold compile
        env = dict(os.environ, OMP_NUM_THREADS=str(kwargs["threads"]), TORCHINDUCTOR_CACHE_DIR=cache)
        cmd = [sys.executable, __file__, "--worker", json.dumps(kwargs)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(r: dict, batch: int) -> dict:
    gain = r["eager_step_s"] - r["compiled_step_s"]
    overhead = r["cold_step_s"] - r["compiled_step_s"]
    return {**r, "speedup": r["eager_step_s"] / r["compiled_step_s"],
            "eager_samples_per_s": batch / r["eager_step_s"], "compiled_samples_per_s": batch / r["compiled_step_s"],
            "compile_s": overhead, "amortised_after_steps": overhead / gain if gain > 0 else None}


def render(rows: list[dict], threads: int, machine: str) -> str:
    lines = [f"Eager vs `torch.compile` train step on {machine}, {threads} threads (median of alternating steps; "
             "compile = first compiled step minus a steady one, empty inductor cache):", "",
             "| model | latent | precision | batch | eager samples/s | compiled samples/s | speedup | compile (s) | "
             "amortised after (steps) |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        amortised = f"{r['amortised_after_steps']:.0f}" if r["amortised_after_steps"] is not None else "never"
        lines.append(f"| {r['preset']} | {r['latent']} | {r['precision']} | {r['batch']} | "
                     f"{r['eager_samples_per_s']:.2f} | {r['compiled_samples_per_s']:.2f} | **{r['speedup']:.2f}x** | "
                     f"{r['compile_s']:.0f} | {amortised} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["DiT-S/2", "DiffiT-S/2"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 32], help="latent sides (4 channels)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_compile.json",
                        help="JSON path; the markdown table is written next to it")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(compile_worker(**json.loads(args.worker))))
        return

    rows = []
    for preset in args.presets:
        for size in args.sizes:
            steps = {8: 20}.get(size, 5)
            steps = max(2, steps // 4) if args.quick else steps
            for precision in args.precisions:
                r = run_worker(preset=preset, sample_size=size, batch=args.batch, precision=precision, steps=steps,
                               threads=args.threads)
                row = {"preset": preset, "latent": f"{size}x{size}x4", "precision": precision, "batch": args.batch,
                       "steps": steps, **summarise(r, args.batch)}
                print(f"  {preset} {row['latent']} {precision}: {row['speedup']:.2f}x compiled, "
                      f"compile {row['compile_s']:.0f} s", flush=True)
                rows.append(row)
    machine = cpu_name()
    table = render(rows, args.threads, machine)
    print("\n" + table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": machine, "torch_threads": args.threads, "quick": args.quick,
                                       "rows": rows}, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
