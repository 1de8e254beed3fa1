"""Data-path throughput: VAE encoding (images/s), the latent-cache loader (latents/s), and how the loader compares with
a DiT-S/2 train step on the same latents (the loader must not be the bottleneck).

    python benchmarks/bench_data.py --vae outputs/vae-fmnist     # our trained VAE (default: a fresh one, same arch)

Writes benchmarks/results/bench_data.json and .md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader

from diffit_hf import create_model
from diffit_hf.data import LatentDataset, encode_to_cache, load_image_dataset

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=None, help="AutoencoderKL folder; default: untrained, default train_vae arch")
    parser.add_argument("--images", type=int, default=2048, help="Fashion-MNIST train images to encode")
    parser.add_argument("--batch", type=int, default=256, help="loader and train batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.vae:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
    else:  # train_vae.py's default architecture, untrained
        from diffit_hf.training.vae import VAETrainConfig, build_vae

        vae = build_vae(VAETrainConfig()).eval()
    data = load_image_dataset("fashion-mnist", "train").select(range(args.images))

    with tempfile.TemporaryDirectory() as cache:
        # 1. Encoding
        start = time.perf_counter()
        meta = encode_to_cache(vae, data, cache, resolution=32, grayscale=True, shard_size=1024, batch_size=128,
                               progress=False)
        encode_ips = args.images / (time.perf_counter() - start)

        # 2. Loader: resampled, flipped latents, batched as training reads them
        loader = DataLoader(LatentDataset(cache, resample=True, random_flip=True), batch_size=args.batch,
                            shuffle=True, drop_last=True)
        start, seen = time.perf_counter(), 0
        for _ in range(3):
            for latents, _labels in loader:
                seen += len(latents)
        loader_lps = seen / (time.perf_counter() - start)

    # 3. DiT-S/2 train step on these latents
    side = meta["latent_shape"][1]
    model = create_model("DiT-S/2", sample_size=side, num_classes=10).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 4, side, side)
    t, y = torch.randint(0, 1000, (args.batch,)), torch.randint(0, 10, (args.batch,))
    times = []
    for i in range(4):
        start = time.perf_counter()
        loss = model(x, t, y).sample[:, :4].sub(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # first step warms up
            times.append(time.perf_counter() - start)
    train_sps = args.batch / sorted(times)[len(times) // 2]

    result = {"encode_images_per_s": encode_ips, "loader_latents_per_s": loader_lps,
              "dit_s2_train_samples_per_s": train_sps, "loader_over_train": loader_lps / train_sps,
              "latent_shape": meta["latent_shape"], "images": args.images, "batch": args.batch,
              "threads": args.threads, "vae": args.vae or "untrained default architecture"}
    table = "\n".join([
        f"Data path, Fashion-MNIST 32x32 -> {'x'.join(map(str, meta['latent_shape']))} latents, "
        f"{args.threads} threads:",
        "", "| measurement | value |", "|---|---:|",
        f"| VAE encoding (images/s) | {encode_ips:,.0f} |",
        f"| cache loader, resample + flip (latents/s) | {loader_lps:,.0f} |",
        f"| DiT-S/2 train step on those latents (samples/s) | {train_sps:,.1f} |",
        f"| loader / train throughput | **{loader_lps / train_sps:,.0f}x** |",
    ])
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_data.md").write_text(table + "\n")
    (RESULTS / "bench_data.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
