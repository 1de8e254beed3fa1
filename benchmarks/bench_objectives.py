"""DiT or DiffiT? Which objective? Each (model, objective) trains on the offline demo's latents with the demo's recipe
for the same number of steps, then `training/evaluate.py` scores its exported pipeline (FID-FMNIST, KID,
precision/recall, class consistency, real-data floor) at a few sampling step counts with the same solver
(DPM-Solver++ 2M; for flow models on flow sigmas). Writes results/bench_objectives.{json,md}; the README renders the
table (`benchmarks/update_readme.py`).

    # needs the demo's VAE and latent cache (the demo command builds them) and the FID-FMNIST classifier
    python benchmarks/bench_objectives.py --steps 1000 --num-samples 2000 --sampling-steps 10 25
    # a machine without fast bf16: fp32, the v_prediction row beside a DiT eps reference, in their own results file
    python benchmarks/bench_objectives.py --runs "DiT eps" "DiT v" --mixed-precision no --sampling-steps 25 \
        --out outputs/bench-objectives-fp32 --results-name bench_objectives_fp32

Every run is a real command line (`train_latent.py`, `evaluate.py`) in a subprocess; finished runs are reused
(delete outputs/bench-objectives/<run> to redo one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RECIPE_LR_3E4, describe  # beside this script: a script's folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEMO = ROOT / "training" / "configs" / "demo_fmnist.yaml"
DIT = ("DiT-S/4", {"num_layers": 6})
DIFFIT = ("DiffiT-S/2", {"num_layers": 6, "patch_size": 4})  # the same width, depth and tokens as DiT-S/4 x 6
# run name -> (preset, model overrides, train_latent flags)
EPS, V = ["--objective", "epsilon", "--timestep-sampling", "uniform"], ["--objective", "v_prediction",
                                                                          "--timestep-sampling", "uniform"]
FLOW_LN = ["--objective", "flow", "--timestep-sampling", "logit_normal"]
RUNS = {
    "DiT eps": (*DIT, EPS),
    "DiT v": (*DIT, V),
    "DiT flow-LN": (*DIT, FLOW_LN),
    "DiffiT eps": (*DIFFIT, EPS),
    "DiffiT flow-LN": (*DIFFIT, FLOW_LN),
}


def run(cmd: list[str], log: Path) -> float:
    start = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--sampling-steps", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--mixed-precision", default="bf16", choices=["bf16", "no"],
                        help="the demo's bf16, or fp32 ('no') on CPUs without fast bf16 matmuls")
    parser.add_argument("--out", default="outputs/bench-objectives")
    parser.add_argument("--results-name", default="bench_objectives",
                        help="results/NAME.{json,md}; the README renders bench_objectives*.md in name order")
    args = parser.parse_args()
    machine = describe()
    print(f"machine: {machine}")
    rows = []
    for name in args.runs:
        preset, overrides, flags = RUNS[name]
        folder = ROOT / args.out / name.replace(" ", "-")
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "train_results.json").exists():
            run([sys.executable, "training/train_latent.py", "--config", str(DEMO), "--model", preset,
                 "--model-config", json.dumps(overrides), *RECIPE_LR_3E4, *flags, "--max-steps", str(args.steps),
                 "--mixed-precision", args.mixed_precision,
                 "--validation-steps", str(args.steps), "--checkpointing-steps", str(args.steps),
                 "--report-to", "none", "--output-dir", str(folder)], folder / "train.log")
        train = json.loads((folder / "train_results.json").read_text())
        for steps in args.sampling_steps:
            out = folder / f"eval-{steps}.json"
            if not out.exists():
                run([sys.executable, "training/evaluate.py", "--pipeline", str(folder), "--num-samples",
                     str(args.num_samples), "--num-inference-steps", str(steps), "--scheduler", "dpm",
                     "--guidance-scale", str(args.guidance_scale), "--output", str(out)], folder / f"eval-{steps}.log")
            ev = json.loads(out.read_text())
            second = ev.get("second_evaluator") or {}
            rows.append({"run": name, "model": preset, "model_config": overrides, "flags": flags,
                         "params": train["params"], "train_steps": train["steps"],
                         "train_minutes": train["train_seconds"] / 60, "final_loss": train["final_loss"],
                         "sampling_steps": steps, **{k: ev[k] for k in ("fid", "kid", "precision", "recall",
                                                                          "class_consistency", "floor_fid")},
                         **{f"spatial_{k}": second[k] for k in ("fid", "recall", "class_consistency", "floor_fid")
                            if k in second}})
            print(f"{name:16s} {steps:3d} steps: FID-FMNIST {ev['fid']:.2f}, class consistency "
                  f"{ev['class_consistency']:.1%}, precision {ev['precision']:.3f}, recall {ev['recall']:.3f}")
    result = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "train_steps": args.steps,
              "mixed_precision": args.mixed_precision,
              "num_samples": args.num_samples, "guidance_scale": args.guidance_scale, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results_name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.results_name}.md").write_text(render(result) + "\n")
    print(render(result))


def render(result: dict) -> str:
    m = result["machine"]
    precision = {"bf16": "bf16", "no": "fp32"}[result.get("mixed_precision", "bf16")]
    spatial = any("spatial_fid" in r for r in result["rows"])
    lines = [f"Objectives, measured on {m['cpu']} ({m['cores']} cores, fp32 matmul {m['fp32_gflops']} GFLOP/s), "
             f"{result['date']}: the demo recipe (6 blocks, 16 tokens, batch 64, lr 3e-4, {precision}, EMA) for "
             f"{result['train_steps']} steps each; {result['num_samples']:,} samples, DPM-Solver++ 2M (on flow sigmas "
             f"for flow models), guidance {result['guidance_scale']}.", ""]
    header = "| run | params | train min | sampling steps | FID-FMNIST | KID | precision | recall | class consist. |"
    if spatial:
        header += " FID-FMNIST-spatial | recall (spatial) | class consist. (spatial) |"
    lines += [header, "|---|" + "---:|" * (header.count("|") - 2)]
    for r in result["rows"]:
        line = (f"| {r['run']} | {r['params'] / 1e6:.1f}M | {r['train_minutes']:.1f} | {r['sampling_steps']} | "
                f"{r['fid']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                f"{r['class_consistency']:.1%} |")
        if spatial:
            line += (f" {r['spatial_fid']:.2f} | {r['spatial_recall']:.3f} | {r['spatial_class_consistency']:.1%} |"
                     if "spatial_fid" in r else " - | - | - |")
        lines.append(line)
    if result["rows"]:
        floors = f"FID-FMNIST {result['rows'][0]['floor_fid']:.2f}"
        if spatial:
            floors += f", FID-FMNIST-spatial {result['rows'][0]['spatial_floor_fid']:.2f}"
        lines += ["", f"Real-data floor: {floors}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
