"""Collects an offline demo's own metrics files into benchmarks/results/ (for the README) and copies its sample grids
to docs/: the DiT demo (outputs/dit-fmnist -> demo_fmnist.json) or the DiffiT demo (outputs/diffit-fmnist ->
demo_fmnist_diffit.json).

    python benchmarks/collect_demo.py [--outputs outputs] [--run diffit-fmnist] [--setup-seconds 79]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

from common import describe  # beside this script: a script's folder is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
# demo run folder -> (results file, docs/ name of its samples.png, docs/ name of its evaluation grid)
DEMOS = {"dit-fmnist": ("demo_fmnist", "demo_samples.png", "demo_eval_samples.png"),
         "diffit-fmnist": ("demo_fmnist_diffit", "diffit_demo_samples.png", "diffit_demo_eval_samples.png")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", default="outputs")
    parser.add_argument("--machine", default=f"{platform.machine()} CPU, 2 cores (no GPU)")
    parser.add_argument("--run", default="dit-fmnist", choices=list(DEMOS), help="the demo's output folder")
    parser.add_argument("--setup-seconds", type=float, help="the README's setup command took this long (fresh clone)")
    parser.add_argument("--eval-untimed", action="store_true", help="the evaluation shared the CPU: omit its time")
    args = parser.parse_args()
    out = Path(args.outputs)
    run = out / args.run
    results_name, samples_doc, eval_doc = DEMOS[args.run]
    vae = json.loads((out / "vae-fmnist" / "metrics.json").read_text())
    cache = json.loads((out / "latents-fmnist-32" / "index.json").read_text())
    train = json.loads((run / "train_results.json").read_text())
    clf = json.loads((out / "classifier-fmnist" / "metrics.json").read_text())
    ev = json.loads((run / "eval.json").read_text())
    demo = {
        "machine": args.machine, "date": time.strftime("%Y-%m-%d"), "machine_speed": describe(),
        "run": args.run, "setup_seconds": args.setup_seconds,
        "vae": {"psnr_db": vae["psnr_db"], "seconds": train["demo_data_seconds"].get("vae", vae["seconds"]),
                "scaling_factor": vae["scaling_factor"], "latent_shape": vae["latent_shape"]},
        "cache": {"num_samples": cache["num_samples"], "seconds": train["demo_data_seconds"].get("cache", 0.0)},
        "train": {"model": train["model"], "params": train["params"], "steps": train["steps"],
                  "final_loss": train["final_loss"], "seconds": train["train_seconds"],
                  "total_seconds": train["total_seconds"], "steps_per_s": train["steps_per_s"],
                  "validation_seconds": train.get("validation_seconds", 0.0),
                  "checkpoint_seconds": train.get("checkpoint_seconds", 0.0),
                  "objective": json.loads((run / "train_config.json").read_text())["objective"]},
        "classifier": {"test_accuracy": clf["test_accuracy"], "seconds": clf["train_seconds"]},
        "eval": ev, "eval_timed": not args.eval_untimed,
    }
    if (run / "eval_cfg4.json").exists():  # the same evaluation at a higher guidance scale
        demo["eval_high_cfg"] = json.loads((run / "eval_cfg4.json").read_text())
    results = ROOT / "benchmarks" / "results" / f"{results_name}.json"
    results.write_text(json.dumps(demo, indent=2) + "\n")
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    for src, dst in ((run / "samples.png", samples_doc), (run / "eval_samples.png", eval_doc)):
        if src.exists():
            shutil.copy(src, docs / dst)
    print(f"wrote {results} and docs/")


if __name__ == "__main__":
    main()
