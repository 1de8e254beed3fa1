"""Regenerates the README's results sections from the JSON/markdown the project's own commands wrote.

    python benchmarks/update_readme.py

- `<!-- bench:start -->` ... `<!-- bench:end -->`: benchmarks/results/bench_models.md and bench_sampling.md (each
  rendered from its JSON by the benchmark script that measured it).
- `<!-- demo:start -->` ... `<!-- demo:end -->`: benchmarks/results/demo_fmnist.json (written by
  `benchmarks/collect_demo.py` from the demo's own metrics files).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def replace_section(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", flags=re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- {name}:start --> / <!-- {name}:end --> markers.")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def demo_section(demo: dict) -> str:
    vae, clf, train, ev = demo["vae"], demo["classifier"], demo["train"], demo["eval"]
    rows = [
        ("VAE (32x32x1 -> 8x8x4), test PSNR", f"{vae['psnr_db']:.2f} dB", f"{vae['seconds'] / 60:.1f} min"),
        ("latent cache (60,000 train images)", f"{demo['cache']['num_samples']:,} latents",
         f"{demo['cache']['seconds'] / 60:.1f} min"),
        (f"{train['model']} ({train['params']:,} params), {train['steps']} steps",
         f"final loss {train['final_loss']:.4f}", f"{train['seconds'] / 60:.1f} min"),
        ("FID-FMNIST classifier, test accuracy", f"{clf['test_accuracy']:.2%}", f"{clf['seconds'] / 60:.1f} min"),
    ]
    lines = [f"Measured on {demo['machine']}, {demo['date']}.", "",
             "| stage | result | wall time |", "|---|---|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Sample quality of the exported pipeline ({ev['num_samples']:,} samples, balanced over the 10 "
              f"classes, {ev['config']['num_inference_steps']} {ev['config']['scheduler'] or 'DDPM'} steps, cfg "
              f"{ev['config']['guidance_scale']}; reference: Fashion-MNIST test; floor: {ev['num_samples']:,} real "
              "training images vs the same reference):", "",
              "| | FID-FMNIST | KID | precision | recall | class consistency |", "|---|---:|---:|---:|---:|---:|",
              f"| {train['model']} (EMA) | {ev['fid']:.2f} | {ev['kid']:.4f} | {ev['precision']:.3f} | "
              f"{ev['recall']:.3f} | {ev['class_consistency']:.1%} |",
              f"| real-data floor | {ev['floor_fid']:.2f} | {ev['floor_kid']:.4f} | {ev['floor_precision']:.3f} | "
              f"{ev['floor_recall']:.3f} | {ev['floor_class_consistency']:.1%} |",
              "", "FID-FMNIST uses the project's Fashion-MNIST classifier features: it is comparable only with other "
              "FID-FMNIST numbers from the same classifier, never with Inception FID."]
    return "\n".join(lines)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    bench = [p.read_text().strip() for p in (RESULTS / "bench_models.md", RESULTS / "bench_sampling.md")
             if p.exists()]
    if bench:
        text = replace_section(text, "bench", "\n\n".join(bench))
    demo = RESULTS / "demo_fmnist.json"
    if demo.exists():
        text = replace_section(text, "demo", demo_section(json.loads(demo.read_text())))
    readme.write_text(text)
    print(f"updated {readme}")


if __name__ == "__main__":
    main()
