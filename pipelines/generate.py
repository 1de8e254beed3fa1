"""Generate a labelled image grid with a saved DiffiTPipeline (local folder or Hub repo id).

    python pipelines/generate.py --model PATH_OR_REPO --labels Sneaker Bag "Ankle boot" --guidance-scale 4 \
        --steps 50 --scheduler dpm --seed 0 --num-per-label 4 --out grid.png

One column per label (ids or names), `--num-per-label` rows; the label name is written under each column.
"""

from __future__ import annotations

import argparse

import torch

from diffit_hf import DiffiTPipeline
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.pipelines.pipeline_diffit import SCHEDULERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="pipeline folder or Hub repo id")
    parser.add_argument("--labels", nargs="*", default=None, help="class ids or names (omit for unconditional)")
    parser.add_argument("--num-per-label", type=int, default=4)
    parser.add_argument("--guidance-scale", type=float, default=4.0)
    parser.add_argument("--guidance-schedule", choices=["constant", "power_cosine"], default="constant")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="default: the saved one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="grid.png")
    args = parser.parse_args()

    pipe = DiffiTPipeline.from_pretrained(args.model).to(args.device)
    if args.scheduler:
        # only DDPM samples with the learned variance; the others take epsilon alone
        pipe.use_scheduler(args.scheduler)
    labels = None
    if args.labels:
        labels = [int(x) if x.isdigit() else x for x in args.labels]
    generator = torch.Generator(args.device).manual_seed(args.seed)
    images = pipe(labels, num_images_per_label=args.num_per_label, guidance_scale=args.guidance_scale,
                  guidance_schedule=args.guidance_schedule, num_inference_steps=args.steps,
                  generator=generator).images
    if labels is None:
        captions = ["unconditional"]
    else:
        id2label = {int(k): v for k, v in pipe.config.id2label.items()}
        ids = [x if isinstance(x, int) else pipe.get_label_ids(x)[0] for x in labels]
        captions = [id2label.get(i, str(i)) for i in ids]
    labelled_grid(images, captions, args.num_per_label).save(args.out)
    print(f"wrote {args.out} ({len(images)} images)")


if __name__ == "__main__":
    main()
