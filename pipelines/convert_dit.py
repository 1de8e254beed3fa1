"""Convert DiT weights to a diffit_hf `DiTModel` folder (config.json + safetensors).

    # official facebookresearch/DiT checkpoint (256 px -> 32x32 latents; use --latent-size 64 for 512 px)
    python pipelines/convert_dit.py --official DiT-XL-2-256x256.pt --preset DiT-XL/2 --out dit-xl-2-256
    # diffusers DiT (a local folder or Hub id holding a `transformer` subfolder)
    python pipelines/convert_dit.py --diffusers facebook/DiT-XL-2-256 --out dit-xl-2-256
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffit_hf import convert_diffusers_dit, convert_official_dit, list_presets
from diffit_hf.models.presets import preset_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--official", help="path to an official .pt checkpoint (loaded with weights_only=True)")
    source.add_argument("--diffusers", help="diffusers DiT pipeline folder or Hub id")
    parser.add_argument("--preset", default="DiT-XL/2", choices=[n for n in list_presets() if n.startswith("DiT-")])
    parser.add_argument("--config", help="a DiTModel config.json to use instead of --preset (custom architectures)")
    parser.add_argument("--latent-size", type=int, default=32, help="latent side: image size / 8")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    if args.official:
        state_dict = torch.load(args.official, map_location="cpu", weights_only=True)
        if args.config:
            config = json.loads(Path(args.config).read_text())
            config = {k: v for k, v in config.items() if not k.startswith("_")}
        else:
            _, config = preset_config(args.preset, sample_size=args.latent_size, num_classes=args.num_classes)
        model = convert_official_dit(state_dict, config)
    else:
        from diffusers import DiTTransformer2DModel

        model = convert_diffusers_dit(DiTTransformer2DModel.from_pretrained(args.diffusers, subfolder="transformer"))
    model.save_pretrained(args.out)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
