"""Data-path throughput: VAE encoding (images/s), the latent-cache loader (latents/s), and how the loader compares with
a DiT-S/2 train step on the same latents (the loader must not be the bottleneck).

    python benchmarks/bench_data.py --vae outputs/vae-fmnist     # our trained VAE (default: a fresh one, same arch)
    # the scale run: caches of N and 10N rows (tiled from the encoded images), resident memory and throughput
    python benchmarks/bench_data.py --vae outputs/vae-fmnist --scale-rows 60000

The scale run measures, for each cache in a fresh process, resident memory (VmRSS) and its peak (VmHWM) after
opening the cache and after 50 shuffled batches, and the loader's latents/s with 0 and 2 workers (workers add their
own processes: their peak is reported apart). Writes benchmarks/results/bench_data.json and .md (or --results).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import describe, median
from diffusers import AutoencoderKL
from torch.utils.data import DataLoader

from diffit_hf import create_model
from diffit_hf.data import LatentDataset, encode_to_cache, load_image_dataset
from diffit_hf.data.cache_format import INDEX, storage_dtype, write_shard

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=None, help="AutoencoderKL folder; default: untrained, default train_vae arch")
    parser.add_argument("--images", type=int, default=2048, help="Fashion-MNIST train images to encode")
    parser.add_argument("--batch", type=int, default=256, help="loader and train batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale-rows", type=int, default=0, help="the scale run: caches of N and 10N rows (0: skip)")
    parser.add_argument("--scale-dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--scale-dir", default=None, help="where the scale caches go (default: a temporary folder)")
    parser.add_argument("--results", default=str(RESULTS), help="folder of the JSON and markdown results")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one cache, one fresh process
    parser.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(probe(args.probe, args.batch, args.workers)))
        return
    torch.manual_seed(0)

    if args.vae:
        vae = AutoencoderKL.from_pretrained(args.vae).eval()
    else:  # train_vae.py's default architecture, untrained
        from diffit_hf.training.vae import VAETrainConfig, build_vae

        vae = build_vae(VAETrainConfig()).eval()
    data = load_image_dataset("fashion-mnist", "train").select(range(args.images))

    with tempfile.TemporaryDirectory() as cache:
        # 1. Encoding (both orientations: --random-flip)
        start = time.perf_counter()
        meta = encode_to_cache(vae, data, cache, resolution=32, grayscale=True, shard_size=1024, batch_size=128,
                               progress=False, random_flip=True)
        encode_ips = args.images / (time.perf_counter() - start)

        # 2. Loader: resampled, flipped latents, batched as training reads them
        loader = DataLoader(LatentDataset(cache, resample=True, random_flip=True), batch_size=args.batch,
                            shuffle=True, drop_last=True)
        start, seen = time.perf_counter(), 0
        for _ in range(3):
            for latents, _labels in loader:
                seen += len(latents)
        loader_lps = seen / (time.perf_counter() - start)

        # 4. The scale run: caches of N and 10N rows tiled from this one, each probed in a fresh process
        scale = []
        if args.scale_rows:
            with tempfile.TemporaryDirectory(dir=args.scale_dir) as root:
                for rows in (args.scale_rows, 10 * args.scale_rows):
                    folder = Path(root) / f"rows-{rows}"
                    start = time.perf_counter()
                    tile_cache(cache, folder, rows, args.scale_dtype)
                    size = sum(p.stat().st_size for p in folder.glob("shard-*"))
                    print(f"tiled {rows:,} rows ({size / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s")
                    for workers in (0, 2):
                        cmd = [sys.executable, __file__, "--probe", str(folder), "--batch", str(args.batch),
                               "--workers", str(workers), "--threads", str(args.threads)]
                        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                        scale.append({"rows": rows, "cache_bytes": size, "workers": workers,
                                      **json.loads(out.strip().splitlines()[-1])})

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
    train_sps = args.batch / median(times)

    for row in scale:
        row["loader_over_train"] = row["latents_per_s"] / train_sps
    result = {"encode_images_per_s": encode_ips, "loader_latents_per_s": loader_lps,
              "dit_s2_train_samples_per_s": train_sps, "loader_over_train": loader_lps / train_sps,
              "latent_shape": meta["latent_shape"], "images": args.images, "batch": args.batch,
              "threads": args.threads, "vae": args.vae or "untrained default architecture", "scale": scale}
    if scale:
        result["machine"] = describe()
        result["scale_dtype"] = args.scale_dtype
    table = "\n".join([
        f"Data path, Fashion-MNIST 32x32 -> {'x'.join(map(str, meta['latent_shape']))} latents, "
        f"{args.threads} threads:",
        "", "| measurement | value |", "|---|---:|",
        f"| VAE encoding (images/s) | {encode_ips:,.0f} |",
        f"| cache loader, resample + flip (latents/s) | {loader_lps:,.0f} |",
        f"| DiT-S/2 train step on those latents (samples/s) | {train_sps:,.1f} |",
        f"| loader / train throughput | **{loader_lps / train_sps:,.0f}x** |",
    ])
    if scale:
        mib = 2**20
        table += "\n\n" + "\n".join([
            f"Scale run: caches tiled to N and 10N rows ({args.scale_dtype}, both orientations), one fresh process "
            f"each, batch {args.batch}, on {result['machine'].get('cpu', 'this machine')}:",
            "", "| rows | cache (GiB) | workers | RSS after open (MiB) | RSS after 50 batches (MiB) | peak RSS (MiB) "
            "| workers' peak RSS (MiB) | loader latents/s | loader / DiT-S/2 train |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *(f"| {r['rows']:,} | {r['cache_bytes'] / 2**30:.2f} | {r['workers']} | {r['rss_open'] / mib:,.0f} | "
              f"{r['rss_50_batches'] / mib:,.0f} | {r['peak_rss'] / mib:,.0f} | {r['workers_peak_rss'] / mib:,.0f} | "
              f"{r['latents_per_s']:,.0f} | {r['loader_over_train']:,.0f}x |" for r in scale),
        ])
        growth = {w: [r["peak_rss"] for r in scale if r["workers"] == w] for w in (0, 2)}
        result["peak_rss_growth_n_to_10n"] = {w: g[1] - g[0] for w, g in growth.items()}
        table += "\n\npeak RSS growth from N to 10N rows: " + ", ".join(
            f"{(g[1] - g[0]) / mib:+.1f} MiB ({w} workers)" for w, g in growth.items())
    print(table)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "bench_data.md").write_text(table + "\n")
    (results / "bench_data.json").write_text(json.dumps(result, indent=2) + "\n")


def tile_cache(source: str | Path, folder: Path, rows: int, dtype: str) -> None:
    """A cache of `rows` rows repeating the rows of `source`, written shard by shard (constant memory)."""
    base = LatentDataset(source, resample=False)
    names = ["mean", "std", "mean_flip", "std_flip"] if base.meta["random_flip"] else ["mean", "std"]
    tensors = {name: base.read_all(name) for name in names} | {"label": base.labels}
    meta = {**base.meta, "num_samples": rows, "num_shards": -(-rows // base.meta["shard_size"]),
            "dtype": storage_dtype(dtype)}
    folder.mkdir(parents=True)
    for i in range(meta["num_shards"]):
        index = torch.arange(i * meta["shard_size"], min((i + 1) * meta["shard_size"], rows)) % len(base)
        write_shard(folder, i, {name: value[index] for name, value in tensors.items()}, meta)
    (folder / INDEX).write_text(json.dumps(meta))


def resident() -> dict[str, int]:
    """This process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")}


def probe(cache: str, batch: int, workers: int, batches: int = 50) -> dict:
    """Resident memory after opening `cache` and after `batches` shuffled batches, and the loader's latents/s."""
    import resource

    data = LatentDataset(cache, resample=True, random_flip=True, seed=0)
    opened = resident()
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    start, seen = time.perf_counter(), 0
    for i, (latents, _labels) in enumerate(loader):
        seen += len(latents)
        if i + 1 == batches:
            break
    seconds = time.perf_counter() - start
    after = resident()
    return {"rss_open": opened["VmRSS"], "rss_50_batches": after["VmRSS"], "peak_rss": after["VmHWM"],
            "workers_peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 if workers else 0,
            "latents_per_s": seen / seconds}


if __name__ == "__main__":
    main()
