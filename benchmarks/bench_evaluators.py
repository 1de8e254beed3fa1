"""Can each offline evaluator fail? Both FID-FMNIST extractors score, against the Fashion-MNIST test split and through
exactly the samples' preprocessing (uint8 rounding at 32 px):

- real training images (the floor: what a perfect model scores),
- the demo VAE's reconstructions of them (the ceiling of any model sampling in its latents),
- the same real images blurred (Gaussian, sigma 0.5 and 1 px),
- the real images under wrong labels (class consistency: every requested class shifted by one).

An evaluator that does not rank blur and wrong labels clearly worse than real images cannot rank models. Writes
results/bench_evaluators.{json,md}.

    python training/train_classifier.py && python training/train_classifier.py --features spatial
    python benchmarks/bench_evaluators.py --num-images 5000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import describe  # beside this script: a script's folder is sys.path[0]

from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import gaussian_blur, in_batches, load_extractor, quantize, score_image_set, shifted_labels

RESULTS = Path(__file__).parent / "results"
EXTRACTORS = {"FID-FMNIST": "outputs/classifier-fmnist", "FID-FMNIST-spatial": "outputs/classifier-fmnist-spatial"}


@torch.no_grad()
def reconstruct(vae_path: str, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    """The VAE's reconstructions (posterior mean decoded) of images in [-1, 1]."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_path).eval()
    return in_batches(lambda x: vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1), images, batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=5000, help="real training images per set")
    parser.add_argument("--vae", default="outputs/vae-fmnist")
    args = parser.parse_args()
    machine = describe()
    real, labels = load_image_tensors("fashion-mnist", "train", 32, grayscale=True, limit=args.num_images)
    reference_images, _ = load_image_tensors("fashion-mnist", "test", 32, grayscale=True)
    sets = {"real (floor)": (real, labels), "VAE reconstructions": (reconstruct(args.vae, real), labels),
            "blurred, sigma 0.5 px": (gaussian_blur(real, 0.5), labels),
            "blurred, sigma 1 px": (gaussian_blur(real, 1.0), labels),
            "wrong labels": (real, shifted_labels(labels, 10))}
    rows = []
    for evaluator, path in EXTRACTORS.items():
        extractor = load_extractor(path)
        reference = in_batches(extractor, quantize(reference_images))
        for name, (images, requested) in sets.items():
            scores = score_image_set(extractor, reference, images, requested)
            rows.append({"evaluator": evaluator, "extractor": extractor.name, "features": reference.shape[1],
                         "set": name, **scores})
            print(f"{evaluator:20s} {name:22s} FID {scores['fid']:8.3f}  KID {scores['kid']:.4f}  "
                  f"class consistency {scores['class_consistency']:.1%}")
    result = {"machine": machine, "date": time.strftime("%Y-%m-%d"), "num_images": args.num_images,
              "reference": "fashion-mnist:test (10,000)", "vae": args.vae, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_evaluators.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bench_evaluators.md").write_text(render(result) + "\n")
    print(render(result))


def render(result: dict) -> str:
    m = result["machine"]
    lines = [f"Evaluator checks, {result['date']} ({m['cpu']}): {result['num_images']:,} Fashion-MNIST training "
             f"images per set against {result['reference']}, all rounded to uint8 at 32 px as samples are.", "",
             "| evaluator | features | set | FID | KID | class consistency |", "|---|---:|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['evaluator']} | {r['features']} | {r['set']} | {r['fid']:.3f} | {r['kid']:.4f} | "
                     f"{r['class_consistency']:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
