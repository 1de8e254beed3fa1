"""Regenerates the README's results sections from the JSON/markdown the project's own commands wrote.

    python benchmarks/update_readme.py

- `<!-- bench:start -->` ... `<!-- bench:end -->` of benchmarks/README.md: benchmarks/results/bench_{models,compile,
  sampling,data}.md and gpu_bench.md (each rendered from its JSON by the benchmark script that measured it; absent
  files are skipped).
- `<!-- demo:start -->` ... `<!-- demo:end -->` and `<!-- diffit-demo:start -->` ... `<!-- diffit-demo:end -->`:
  benchmarks/results/demo_fmnist.json and demo_fmnist_diffit.json (written by `benchmarks/collect_demo.py` from each
  demo's own metrics files).
- `<!-- objectives:start -->` ... `<!-- objectives:end -->`: benchmarks/results/bench_objectives*.md (written by
  `benchmarks/bench_objectives.py`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from common import SAMPLER_LABELS  # beside this script (sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", flags=re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- {name}:start --> / <!-- {name}:end --> markers.")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def eval_row(name: str, e: dict, prefix: str = "") -> str:
    """One row of the demo's quality table: each cell FID-FMNIST / FID-FMNIST-spatial where eval.json carries the
    second evaluator, FID-FMNIST alone otherwise."""
    evaluators = [e] + ([e["second_evaluator"]] if "second_evaluator" in e else [])
    formats = {"fid": "{:.2f}", "kid": "{:.4f}", "precision": "{:.3f}", "recall": "{:.3f}",
               "class_consistency": "{:.1%}"}
    cells = [" / ".join(fmt.format(x[prefix + k]) for x in evaluators) for k, fmt in formats.items()]
    return f"| {name} | " + " | ".join(cells) + " |"


def guidance_label(config: dict) -> str:
    """`cfg 3.0`, or `cfg 3.0 in (0.3, 5.0]` for guidance limited to an interval of noise levels."""
    interval = config.get("guidance_interval")
    return f"cfg {config['guidance_scale']}" + (f" in ({interval[0]}, {interval[1]}]" if interval else "")


def demo_section(demo: dict) -> str:
    vae, clf, train, ev = demo["vae"], demo["classifier"], demo["train"], demo["eval"]
    setup = demo.get("setup_seconds")  # a fresh clone's setup: its own row, and the whole chain after the demo's
    rows = [("setup (`bash scripts/setup.sh`)", "", f"{setup / 60:.1f} min")] if setup else []
    rows += [
        (f"VAE (32x32x1 -> {'x'.join(map(str, vae['latent_shape'][1:] + vae['latent_shape'][:1]))}), test PSNR",
         f"{vae['psnr_db']:.2f} dB", f"{vae['seconds'] / 60:.1f} min"),
        ("latent cache (60,000 train images)", f"{demo['cache']['num_samples']:,} latents",
         f"{demo['cache']['seconds'] / 60:.1f} min"),
        (f"{train['model']} ({train['params']:,} params, {train.get('objective', 'epsilon')}), {train['steps']} "
         "steps", f"final loss {train['final_loss']:.4f}", f"{train['seconds'] / 60:.1f} min"),
        ("  of which validation grids / checkpoints", "",
         f"{train.get('validation_seconds', 0) / 60:.1f} / {train.get('checkpoint_seconds', 0) / 60:.1f} min"),
        ("**the demo command, end to end**", f"pipeline in outputs/{demo.get('run', 'dit-fmnist')}",
         f"**{train['total_seconds'] / 60:.1f} min**"),
    ]
    if setup:
        rows.append(("**setup + the demo command**", "", f"**{(setup + train['total_seconds']) / 60:.1f} min**"))
    rows += [
        ("FID-FMNIST classifier (`train_classifier.py`), test accuracy", f"{clf['test_accuracy']:.2%}",
         f"{clf['seconds'] / 60:.1f} min"),
        ("evaluation (`evaluate.py`)", f"{ev['num_samples']:,} samples",
         f"{ev['total_seconds'] / 60:.1f} min" if demo.get("eval_timed", True) else "not timed (shared the CPU)"),
    ]
    scheduler = SAMPLER_LABELS[ev["config"]["scheduler"] or "ddpm"]
    speed = demo.get("machine_speed")
    peak = f" (matmul peak fp32 {speed['fp32_gflops']:.0f}, bf16 {speed['bf16_gflops']:.0f} GFLOP/s)" if speed else ""
    both = " / spatial" if "second_evaluator" in ev else ""  # cells: FID-FMNIST / FID-FMNIST-spatial
    lines = [f"Measured on {demo['machine']}{peak}, {demo['date']}.", "",
             "| stage | result | wall time |", "|---|---|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Sample quality of the exported pipeline ({ev['num_samples']:,} samples, balanced over the 10 "
              f"classes, {ev['config']['num_inference_steps']} {scheduler} steps; reference: Fashion-MNIST test; "
              f"floor: {ev['num_samples']:,} real "
              "training images vs the same reference):", "",
              "| | " + " | ".join(f"{col}{both}" for col in ("FID-FMNIST", "KID", "precision", "recall",
                                                             "class consistency")) + " |",
              "|---|---:|---:|---:|---:|---:|"]
    runs = [ev] + ([demo["eval_high_cfg"]] if "eval_high_cfg" in demo else [])
    lines += [eval_row(f"{train['model']} (EMA), {guidance_label(e['config'])}", e) for e in runs]
    lines += [eval_row("real-data floor", ev, prefix="floor_"),
              "", "FID-FMNIST uses the project's Fashion-MNIST classifier features"
              + (" and FID-FMNIST-spatial those of the second, independent classifier (`--features spatial`)"
                 if both else "")
              + ": comparable only with numbers from the same classifier, never with Inception FID."]
    return "\n".join(lines)


def bench_tables() -> list[Path]:
    """The benchmark tables of the bench section, in README order."""
    return [RESULTS / f"{name}.md" for name in ("bench_models", "bench_compile", "bench_sampling",
                                                "bench_schedulers", "bench_data", "gpu_bench")]


def main() -> None:
    bench = [p.read_text().strip() for p in bench_tables() if p.exists()]
    if bench:
        page = ROOT / "benchmarks" / "README.md"
        page.write_text(replace_section(page.read_text(), "bench", "\n\n".join(bench)))
    readme = ROOT / "README.md"
    text = readme.read_text()
    objectives = sorted(RESULTS.glob("bench_objectives*.md"))  # bf16 runs first, then bench_objectives_fp32.md
    if objectives:
        text = replace_section(text, "objectives", "\n".join(f.read_text() for f in objectives))
    for results, section in (("demo_fmnist.json", "demo"), ("demo_fmnist_diffit.json", "diffit-demo")):
        if (RESULTS / results).exists():
            text = replace_section(text, section, demo_section(json.loads((RESULTS / results).read_text())))
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
