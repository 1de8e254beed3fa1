"""DiT train-step speed and memory: diffit_hf `DiTModel` vs diffusers `DiTTransformer2DModel`, side by side.

Each measurement runs in a fresh subprocess (so peak RSS is its own), with the same config, inputs, precision and
thread count for both implementations. A train step is forward + MSE loss + backward + AdamW step.

    python benchmarks/bench_models.py                 # comparison + preset sweep, writes benchmarks/results/
    python benchmarks/bench_models.py --quick         # fewer steps (smoke run)
    python benchmarks/bench_models.py --no-sweep --results-name models_epyc  # the comparisons only, another file

GMACs are counted analytically (`diffit_hf.count_macs`): torch's FlopCounterMode counts zero for CPU attention.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import alternate, describe, make_step

RESULTS = Path(__file__).parent / "results"


def speed_worker(runs: dict[str, dict], sample_size: int, batch: int, precision: str, steps: int,
                 threads: int) -> dict:
    """Times the runs (label -> `make_step` arguments) in one process, alternating steps (A, B, A, B, ...) so that
    machine noise hits all alike; returns the median seconds per step of each."""
    import torch

    torch.set_num_threads(threads)
    step_fns = {label: make_step(sample_size=sample_size, batch=batch, precision=precision, **run)
                for label, run in runs.items()}
    return alternate(step_fns, steps)  # after a warm-up step each (allocations, AdamW state)


def memory_worker(impl: str, preset: str, sample_size: int, batch: int, precision: str, threads: int) -> dict:
    """Peak resident memory of a process that builds one model and runs two train steps."""
    import torch

    torch.set_num_threads(threads)
    step = make_step(impl, preset, sample_size, batch, precision)
    step()
    step()
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_worker(kind: str, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **kwargs})]
    env = dict(os.environ, OMP_NUM_THREADS=str(kwargs["threads"]))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(impls: list[str], preset: str, sample_size: int, batch: int, precision: str, steps: int,
            threads: int) -> dict[str, dict]:
    """samples/s (alternating, one process) and peak RSS (one process per implementation) for each impl."""
    secs = run_worker("speed", runs={impl: {"impl": impl, "preset": preset} for impl in impls},
                      sample_size=sample_size, batch=batch, precision=precision, steps=steps, threads=threads)
    results = {}
    for impl in impls:
        mem = run_worker("memory", impl=impl, preset=preset, sample_size=sample_size, batch=batch,
                         precision=precision, threads=threads)
        results[impl] = {"sec_per_step": secs[impl], "samples_per_s": batch / secs[impl], **mem}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer timed steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-gmacs", type=float, default=7.5, help="preset sweep: skip presets costlier than this")
    parser.add_argument("--sweep-batch", type=int, default=8)
    parser.add_argument("--no-sweep", action="store_true", help="skip the preset sweep")
    parser.add_argument("--no-diffit", action="store_true", help="skip the DiffiT-vs-DiT comparison")
    parser.add_argument("--results-name", default="models", help="results/bench_NAME.{json,md}")
    args = parser.parse_args()
    if not re.fullmatch(r"[\w.-]+", args.results_name):  # before any work: a name, not a path
        parser.error(f"--results-name must be letters, digits, '_', '.' or '-', got {args.results_name!r}.")
    if args.worker:
        kwargs = json.loads(args.worker)
        fn = speed_worker if kwargs.pop("kind") == "speed" else memory_worker
        print(json.dumps(fn(**kwargs)))
        return

    from diffit_hf import count_macs, list_presets, preset_table

    RESULTS.mkdir(parents=True, exist_ok=True)
    table_rows = {row["name"]: row for row in preset_table()}

    # 1. Side by side: DiT-S/2 at 8x8x4 and 32x32x4, fp32 and bf16.
    comparison = []
    for size, steps in ((8, 40), (32, 5)):
        steps = max(2, steps // 4) if args.quick else steps
        for precision in ("fp32", "bf16"):
            row = {"preset": "DiT-S/2", "latent": f"{size}x{size}x4", "precision": precision,
                   "batch": args.batch, "steps": steps}
            row.update(measure(["diffusers", "diffit_hf"], "DiT-S/2", size, args.batch, precision, steps,
                               args.threads))
            for impl in ("diffusers", "diffit_hf"):
                r = row[impl]
                print(f"  {impl:>9} {row['latent']:>8} {precision}: {r['samples_per_s']:7.2f} samples/s, "
                      f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
            row["speedup"] = row["diffit_hf"]["samples_per_s"] / row["diffusers"]["samples_per_s"]
            row["memory_ratio"] = row["diffit_hf"]["peak_rss_mib"] / row["diffusers"]["peak_rss_mib"]
            comparison.append(row)

    # 2. DiffiT vs DiT at equal GMACs, and DiffiT's biased attention with SDPA (math fallback on CPU) vs the default.
    diffit_vs_dit = []
    if not args.no_diffit:
        runs = {"DiT-S/2": {"impl": "diffit_hf", "preset": "DiT-S/2"},
                "DiffiT-S/2 (sdpa)": {"impl": "diffit_hf", "preset": "DiffiT-S/2", "attention_backend": "sdpa"},
                "DiffiT-S/2": {"impl": "diffit_hf", "preset": "DiffiT-S/2"}}
        for size, steps in ((8, 40), (32, 5)):
            steps = max(2, steps // 4) if args.quick else steps
            for precision in ("fp32", "bf16"):
                secs = run_worker("speed", runs=runs, sample_size=size, batch=args.batch, precision=precision,
                                  steps=steps, threads=args.threads)
                row = {"latent": f"{size}x{size}x4", "precision": precision, "batch": args.batch, "steps": steps,
                       "samples_per_s": {label: args.batch / sec for label, sec in secs.items()}}
                sps = row["samples_per_s"]
                row["diffit_over_dit"] = sps["DiffiT-S/2"] / sps["DiT-S/2"]
                row["sdpa_diffit_over_dit"] = sps["DiffiT-S/2 (sdpa)"] / sps["DiT-S/2"]
                print(f"  DiffiT/DiT {row['latent']} {precision}: {row['diffit_over_dit']:.2f}x "
                      f"(SDPA bias path {row['sdpa_diffit_over_dit']:.2f}x)", flush=True)
                diffit_vs_dit.append(row)

    # 3. Preset sweep (ours only): every preset cheap enough for this machine, at its own input size.
    sweep = []
    if not args.no_sweep:
        for name in list_presets():
            gmacs = count_macs(name) / 1e9
            entry = {"preset": name, "input": table_rows[name]["input"], "params": table_rows[name]["params"],
                     "gmacs": gmacs,
                     "gmacs_no_attention": count_macs(name, include_attention=False) / 1e9}
            if gmacs <= args.max_gmacs:
                for precision in ("fp32", "bf16"):
                    entry[precision] = measure(["diffit_hf"], name, None, args.sweep_batch, precision,
                                               2 if args.quick else 3, args.threads)["diffit_hf"]
                print(f"  {name}: {entry['fp32']['samples_per_s']:.2f} / {entry['bf16']['samples_per_s']:.2f} "
                      "samples/s (fp32/bf16)", flush=True)
            sweep.append(entry)

    # 4. Report
    import torch

    torch.set_num_threads(args.threads)
    machine, date = describe(), time.strftime("%Y-%m-%d")
    lines = [
        f"Measured on {machine['cpu']} ({machine['cores']} cores; matmul fp32 {machine['fp32_gflops']:.0f}, bf16 "
        f"{machine['bf16_gflops']:.0f} GFLOP/s), {date}.",
        "",
        f"DiT-S/2 train step, batch {args.batch}, {args.threads} threads (median of timed steps, samples/s):",
        "",
        "| latent | precision | diffusers | diffit_hf | speedup | peak RSS diffusers / ours (MiB) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in comparison:
        lines.append(
            f"| {row['latent']} | {row['precision']} | {row['diffusers']['samples_per_s']:.2f} | "
            f"{row['diffit_hf']['samples_per_s']:.2f} | **{row['speedup']:.2f}x** | "
            f"{row['diffusers']['peak_rss_mib']:.0f} / {row['diffit_hf']['peak_rss_mib']:.0f} |"
        )
    if diffit_vs_dit:
        lines += ["", f"DiffiT-S/2 vs DiT-S/2 train step (equal GMACs), batch {args.batch}, {args.threads} threads, "
                  "one process, steps alternating; 'SDPA bias' = DiffiT with its relative position bias through "
                  "`F.scaled_dot_product_attention` (the pre-issue-15 path):", "",
                  "| latent | precision | DiT-S/2 | DiffiT-S/2 | DiffiT / DiT | DiffiT (SDPA bias) / DiT |",
                  "|---|---|---:|---:|---:|---:|"]
        for row in diffit_vs_dit:
            sps = row["samples_per_s"]
            lines.append(f"| {row['latent']} | {row['precision']} | {sps['DiT-S/2']:.2f} | {sps['DiffiT-S/2']:.2f} | "
                         f"**{row['diffit_over_dit']:.2f}x** | {row['sdpa_diffit_over_dit']:.2f}x |")
    if sweep:
        lines += ["", f"Every preset at its own input size (train step, batch {args.sweep_batch}; '-' = over "
                  "--max-gmacs, not run here). GMACs count the attention matmuls; the second column leaves them out.",
                  "", "| preset | input | params | GMACs | GMACs w/o attn | fp32 samples/s | bf16 samples/s |"
                  " peak RSS fp32 (MiB) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for e in sweep:
            if "fp32" in e:
                speed = (f"{e['fp32']['samples_per_s']:.2f} | {e['bf16']['samples_per_s']:.2f} | "
                         f"{e['fp32']['peak_rss_mib']:.0f}")
            else:
                speed = "- | - | -"
            lines.append(f"| {e['preset']} | {e['input']} | {e['params']:,} | {e['gmacs']:.2f} | "
                         f"{e['gmacs_no_attention']:.2f} | {speed} |")
    by_name = {e["preset"]: e for e in sweep}
    pairs = [(f"DiffiT-{k}", f"DiffiP-{k}") for k in ("CIFAR10", "FFHQ64", "S/2")]
    pairs = [(a, b) for a, b in pairs if a in by_name and b in by_name]
    if pairs:
        lines += ["", "DiffiP (pool mixer; depthwise-separable convs in U-shaped models) vs DiffiT, equal channels:",
                  "", "| pair | params ratio | GMACs ratio | fp32 train-step speedup |", "|---|---:|---:|---:|"]
        for a, b in pairs:
            ea, eb = by_name[a], by_name[b]
            speed = (f"{eb['fp32']['samples_per_s'] / ea['fp32']['samples_per_s']:.2f}x"
                     if "fp32" in ea and "fp32" in eb else "-")
            lines.append(f"| {b} / {a} | {ea['params'] / eb['params']:.2f}x fewer | "
                         f"{ea['gmacs'] / eb['gmacs']:.2f}x fewer | {speed} |")
    table = "\n".join(lines)
    print("\n" + table)
    md, js = (RESULTS / f"bench_{args.results_name}.{ext}" for ext in ("md", "json"))
    md.write_text(table + "\n")
    payload = {"machine": machine, "date": date, "comparison": comparison,
               "diffit_vs_dit": diffit_vs_dit, "presets": sweep, "torch_threads": args.threads, "quick": args.quick}
    js.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {js} and {md}")


if __name__ == "__main__":
    main()
