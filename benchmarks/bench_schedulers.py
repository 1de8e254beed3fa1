"""Few-step schedulers on the demo model (issue 15, section 4): for each scheduler and step count, images/s and
FID-FMNIST against the Fashion-MNIST test split, next to the 250-step reference sampler in the same run; the table
names the fewest steps each scheduler needs to stay within 10% of the reference FID.

The reference is what the model was trained for: 250 DDPM steps (the pipeline's scheduler config, e.g.
`dit_scheduler`) for an epsilon/v model, 250 Euler steps of the ODE for a flow-matching model (the demo's; DDPM does
not apply to it) or an EDM model. Every configuration draws sample i from the same seed (`sample_indices`), so the
FIDs differ by the sampler, not by the noise; samples are balanced over the classes, guidance and its schedule are
the same everywhere.

    python benchmarks/bench_schedulers.py     # outputs/dit-fmnist -> benchmarks/results/bench_schedulers.{json,md}
    python benchmarks/bench_schedulers.py --num-samples 200 --steps 5 10 --schedulers euler dpm  # a quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import cpu_name  # beside this script: a script's folder is sys.path[0]

RESULTS = Path(__file__).parent / "results"
TOLERANCE = 0.10  # "within 10% of the reference FID"


def fewest_steps(rows: list[dict], reference_fid: float) -> int | None:
    """The smallest step count from which every larger count measured stays within TOLERANCE of the reference."""
    best = None
    for row in sorted(rows, key=lambda r: r["steps"], reverse=True):
        if row["fid"] > reference_fid * (1 + TOLERANCE):
            break
        best = row["steps"]
    return best


def render(payload: dict) -> str:
    ref = payload["reference"]
    lines = [f"Schedulers on `{payload['pipeline']}` ({payload['model']}, {payload['objective']}), "
             f"{payload['num_samples']:,} samples balanced over the classes, guidance {payload['guidance_scale']}, "
             f"FID-FMNIST vs the Fashion-MNIST test split; measured on {payload['machine']}, "
             f"{payload['threads']} threads (images/s include the VAE decode):", "",
             "| scheduler | steps | model evaluations | FID-FMNIST | vs reference | images/s |",
             "|---|---:|---:|---:|---:|---:|",
             f"| {ref['scheduler']} (reference) | {ref['steps']} | {ref['nfe']} | {ref['fid']:.3f} | 1.00x | "
             f"{ref['images_per_s']:.1f} |"]
    for r in payload["rows"]:
        lines.append(f"| {r['scheduler']} | {r['steps']} | {r['nfe']} | {r['fid']:.3f} | "
                     f"{r['fid'] / ref['fid']:.2f}x | {r['images_per_s']:.1f} |")
    lines += ["", "Fewest steps within 10% of the reference FID: " + ", ".join(
        f"{name} **{n}**" if n else f"{name} none of those measured" for name, n in payload["fewest_steps"].items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="outputs/dit-fmnist")
    parser.add_argument("--classifier", default="outputs/classifier-fmnist", help="the FID-FMNIST extractor")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--schedulers", nargs="+", default=None,
                        help="DiffiTPipeline.use_scheduler names (default: every one for the model's objective)")
    parser.add_argument("--steps", nargs="+", type=int, default=[4, 6, 8, 12, 16, 25])
    parser.add_argument("--reference-steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_schedulers.json")
    args = parser.parse_args()

    from diffit_hf import DiffiTPipeline
    from diffit_hf.data import load_image_tensors
    from diffit_hf.evaluation import feature_stats, frechet_distance, in_batches, load_extractor, quantize
    from diffit_hf.pipelines.sampling import configure_sampling, sample_indices
    from diffit_hf.pipelines.schedules import EDM_SCHEDULERS, FLOW_SCHEDULERS, SCHEDULERS

    torch.set_num_threads(args.threads)
    pipe = DiffiTPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    objective = pipe.config.prediction_type
    valid, reference_scheduler = {"flow": (FLOW_SCHEDULERS, "euler"), "edm": (EDM_SCHEDULERS, "euler")}.get(
        objective, (SCHEDULERS, "ddpm"))
    schedulers = args.schedulers or list(valid)
    bad = [s for s in schedulers if s not in valid]
    if bad:  # before any sampling
        parser.error(f"scheduler(s) {', '.join(bad)} do not sample this {objective} model; valid choices are "
                     f"{', '.join(valid)}.")
    extractor = load_extractor(args.classifier)
    real_images, _ = load_image_tensors("fashion-mnist", "test", 32, True, label_column=None)
    real = in_batches(extractor, real_images)
    mu_real, sigma_real = feature_stats(real)
    indices = list(range(args.num_samples))

    def measure(scheduler: str, steps: int) -> dict:
        sampling = configure_sampling(pipe, scheduler=scheduler, num_inference_steps=steps,
                                      guidance_scale=args.guidance_scale)
        calls = []
        hook = pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
        start = time.perf_counter()
        images, _ = sample_indices(pipe, indices, batch_size=args.batch_size, **sampling)
        seconds = time.perf_counter() - start
        hook.remove()
        fake = in_batches(extractor, quantize(images * 2 - 1))
        nfe = len(calls) // -(-len(indices) // args.batch_size)  # model evaluations per image (guidance batched)
        row = {"scheduler": scheduler, "steps": steps, "nfe": nfe, "fid": frechet_distance(
            mu_real, sigma_real, *feature_stats(fake)), "images_per_s": len(indices) / seconds, "seconds": seconds}
        print(f"  {scheduler} {steps} steps: FID {row['fid']:.3f}, {row['images_per_s']:.1f} images/s", flush=True)
        return row

    reference = measure(reference_scheduler, args.reference_steps)
    rows = [measure(s, n) for s in schedulers for n in sorted(args.steps)]
    config = pipe.transformer.config
    model = f"{type(pipe.transformer).__name__}, {config.num_layers} blocks, patch {config.patch_size}"
    payload = {
        "pipeline": args.pipeline, "model": model, "objective": objective,
        "num_samples": args.num_samples, "guidance_scale": args.guidance_scale, "threads": args.threads,
        "machine": cpu_name(), "reference": reference, "rows": rows,
        "fewest_steps": {s: fewest_steps([r for r in rows if r["scheduler"] == s], reference["fid"])
                         for s in schedulers},
    }
    table = render(payload)
    print("\n" + table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
