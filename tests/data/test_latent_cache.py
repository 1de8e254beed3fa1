import json

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from safetensors.torch import load_file

from diffit_hf.data import LatentDataset, encode_to_cache
from diffit_hf.data.cache_format import read_header, shard_path

from ..tiny import tiny_vae as make_tiny_vae


def tiny_vae(seed=0):
    return make_tiny_vae(sample_size=8, scaling_factor=0.7, seed=seed)


@pytest.fixture
def images():
    torch.manual_seed(0)
    pics = [PILImage.fromarray((torch.rand(8, 8) * 255).byte().numpy()) for _ in range(10)]
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_dict({"image": pics, "label": [i % 3 for i in range(10)]}, features=features)


def encode(vae, data, path, **kw):
    return encode_to_cache(vae, data, path, resolution=8, grayscale=True, vae_id="tiny", shard_size=4,
                           batch_size=3, progress=False, **kw)


def test_cache_matches_direct_encoding_and_loader(images, tmp_path):
    vae = tiny_vae()
    meta = encode(vae, images, tmp_path)
    assert meta["num_shards"] == 3 and meta["latent_shape"] == [4, 4, 4] and meta["class_names"] == ["a", "b", "c"]
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["num_samples"] == 10 and index["scaling_factor"] == 0.7
    from diffit_hf.data import preprocess_image

    pixels = torch.stack([preprocess_image(img, 8, grayscale=True) for img in images["image"]])
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
    ds = LatentDataset(tmp_path, resample=False)
    assert len(ds) == 10
    torch.testing.assert_close(ds.read_all("mean"), dist.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ds.read_all("std"), dist.std, atol=1e-5, rtol=1e-5)
    latent, label = ds[5]
    torch.testing.assert_close(latent, dist.mean[5] * 0.7, atol=1e-5, rtol=1e-5)
    assert label == 5 % 3
    resampled = LatentDataset(tmp_path, resample=True)
    a, b = resampled[5][0], resampled[5][0]
    assert not torch.equal(a, b)  # a fresh sample from the stored distribution each time
    draws = torch.stack([resampled[5][0] for _ in range(2000)])
    assert torch.allclose(draws.mean(0), latent, atol=0.1)  # mean * scale
    assert torch.allclose(draws.std(0), ds.read_all("std")[5] * 0.7, rtol=0.15)  # std * scale


def test_rerun_skips_complete_shards_and_redoes_partial_ones(images, tmp_path):
    vae = tiny_vae()
    encode(vae, images, tmp_path)
    mtimes = {i: shard_path(tmp_path, i).stat().st_mtime_ns for i in range(3)}
    original = {k: v.clone() for k, v in load_file(str(shard_path(tmp_path, 1))).items()}  # not an mmap view
    shard_path(tmp_path, 1).write_bytes(shard_path(tmp_path, 1).read_bytes()[:100])  # a truncated shard
    (tmp_path / ".shard-00002.safetensors.tmp-999").write_bytes(b"partial")  # a crashed writer's leftover
    encode(vae, images, tmp_path)
    assert shard_path(tmp_path, 0).stat().st_mtime_ns == mtimes[0]  # skipped
    assert shard_path(tmp_path, 2).stat().st_mtime_ns == mtimes[2]
    assert shard_path(tmp_path, 1).stat().st_mtime_ns != mtimes[1]  # re-encoded ...
    redone = load_file(str(shard_path(tmp_path, 1)))
    for k in original:  # ... identically (deterministic encoding)
        assert torch.equal(original[k], redone[k]), (k, (original[k].float() - redone[k].float()).abs().max())
    assert len(LatentDataset(tmp_path, resample=False)) == 10


def test_two_processes_split_the_shards(images, tmp_path):
    vae = tiny_vae()
    encode(vae, images, tmp_path, process_index=1, num_processes=2)
    assert shard_path(tmp_path, 1).exists() and not shard_path(tmp_path, 0).exists()
    assert not (tmp_path / "index.json").exists()  # incomplete: no index, the loader refuses
    with pytest.raises(FileNotFoundError, match="incomplete"):
        LatentDataset(tmp_path)
    encode(vae, images, tmp_path, process_index=0, num_processes=2)
    assert (tmp_path / "index.json").exists()
    reference = tmp_path / "single"
    encode(vae, images, reference)
    assert torch.equal(LatentDataset(tmp_path, resample=False).read_all(),
                       LatentDataset(reference, resample=False).read_all())


def test_other_vae_or_resolution_is_refused(images, tmp_path):
    encode(tiny_vae(0), images, tmp_path)
    with pytest.raises(ValueError, match="vae_fingerprint"):
        encode(tiny_vae(1), images, tmp_path)
    with pytest.raises(ValueError, match="resolution"):
        encode_to_cache(tiny_vae(0), images, tmp_path, resolution=16, grayscale=True, shard_size=4, progress=False)
    partial = tmp_path / "partial"
    encode(tiny_vae(0), images, partial, process_index=0, num_processes=3)  # shards, no index yet
    with pytest.raises(ValueError, match="refusing to mix"):
        encode(tiny_vae(1), images, partial)
    with pytest.raises(ValueError, match="channels"):
        encode_to_cache(tiny_vae(0), images, tmp_path / "rgb", resolution=8, grayscale=False, progress=False)


def test_encode_latents_script_two_processes(images, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    tiny_vae().save_pretrained(tmp_path / "vae")
    images.save_to_disk(str(tmp_path / "data"))
    script = Path(__file__).resolve().parents[2] / "training" / "encode_latents.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "--vae", str(tmp_path / "vae"), "--dataset", str(tmp_path / "data"), "--resolution", "8", "--grayscale",
           "--shard-size", "3", "--out", str(tmp_path / "cache")]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    subprocess.run(cmd, check=True, env=env, timeout=300)
    ds = LatentDataset(tmp_path / "cache", resample=False)
    reference = tmp_path / "single"
    encode(tiny_vae(), images, reference)
    torch.testing.assert_close(ds.read_all(), LatentDataset(reference, resample=False).read_all(), atol=1e-5,
                               rtol=1e-5)
    assert ds.labels.tolist() == [i % 3 for i in range(10)]


def test_latent_dataset_seeded_resampling_is_order_independent(images, tmp_path):
    encode(tiny_vae(), images, tmp_path, random_flip=True)
    data = LatentDataset(tmp_path, resample=True, random_flip=True, seed=3)
    a = [data[i][0] for i in (5, 9, 5)]
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], data.read_all()[5] * data.scaling_factor)
    assert torch.equal(LatentDataset(tmp_path, resample=True, random_flip=True, seed=3)[5][0], a[0])
    assert not torch.equal(LatentDataset(tmp_path, resample=True, random_flip=True, seed=4)[5][0], a[0])
    data.set_epoch(1)
    assert not torch.equal(data[5][0], a[0])


def test_random_flip_stores_the_encoding_of_the_mirrored_image(images, tmp_path):
    from diffit_hf.data import preprocess_image

    vae = tiny_vae()
    meta = encode(vae, images, tmp_path, random_flip=True)
    assert meta["random_flip"] is True and json.loads((tmp_path / "index.json").read_text())["random_flip"] is True
    mirrored = torch.stack([preprocess_image(img, 8, grayscale=True, flip=True) for img in images["image"]])
    with torch.no_grad():
        dist = vae.encode(mirrored).latent_dist
    ds = LatentDataset(tmp_path, resample=False, random_flip=True, seed=0)
    torch.testing.assert_close(ds.read_all("mean_flip"), dist.mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ds.read_all("std_flip"), dist.std, atol=1e-5, rtol=1e-5)
    # the VAE is not equivariant: the mirrored image's latent is not the mirrored latent grid
    assert (ds.read_all("mean_flip") - ds.read_all("mean").flip(-1)).abs().max() > 1e-3
    plain, flipped = ds.read_all("mean") * 0.7, ds.read_all("mean_flip") * 0.7
    picks = {}
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            latent = ds[i][0]
            assert torch.equal(latent, ds[i][0])  # deterministic per (seed, epoch, index)
            is_plain, is_flipped = torch.equal(latent, plain[i]), torch.equal(latent, flipped[i])
            assert is_plain != is_flipped
            picks[epoch, i] = is_flipped
    assert 0.3 < sum(picks.values()) / len(picks) < 0.7  # both orientations occur, about half each
    assert any(picks[0, i] != picks[1, i] for i in range(len(ds)))  # and change with the epoch
    assert all(not torch.equal(LatentDataset(tmp_path, resample=False)[i][0], flipped[i]) for i in range(10))
    with pytest.raises(ValueError, match="holds no latents of mirrored images.*--random-flip"):
        LatentDataset(encode(vae, images, tmp_path / "plain") and tmp_path / "plain", random_flip=True)
    with pytest.raises(ValueError, match="random_flip=True, this run has False"):
        encode(vae, images, tmp_path)  # one cache, one setting


def test_half_precision_storage_is_recorded_and_checked(images, tmp_path):
    vae = tiny_vae()
    encode(vae, images, tmp_path / "fp32")
    meta = encode(vae, images, tmp_path / "bf16", dtype="bf16")
    assert meta["dtype"] == "bfloat16" and json.loads((tmp_path / "bf16" / "index.json").read_text())["dtype"] == \
        "bfloat16"
    full, half = LatentDataset(tmp_path / "fp32", resample=False), LatentDataset(tmp_path / "bf16", resample=False)
    assert half.read_all().dtype == torch.bfloat16
    assert torch.equal(half.read_all(), full.read_all().to(torch.bfloat16))  # stored = rounded fp32 encoding
    assert half[3][0].dtype == torch.float32 and torch.equal(half[3][0], half.read_all()[3].float() * 0.7)
    size = {name: shard_path(tmp_path / name, 0).stat().st_size - read_header(shard_path(tmp_path / name, 0))[1]
            for name in ("fp32", "bf16")}  # the data, without the header (its metadata outweighs tiny shards)
    assert size["bf16"] < 0.6 * size["fp32"]
    with pytest.raises(ValueError, match="dtype='bfloat16', this run has 'float32'"):
        encode(vae, images, tmp_path / "bf16")
    with pytest.raises(ValueError, match="Unknown latent storage dtype 'fp8'; choose one of fp32, bf16, fp16"):
        encode(vae, images, tmp_path / "fp8", dtype="fp8")
    index = json.loads((tmp_path / "bf16" / "index.json").read_text())
    (tmp_path / "bf16" / "index.json").write_text(json.dumps({**index, "dtype": "float32"}))
    with pytest.raises(ValueError, match="holds torch.bfloat16 latents .* index.json says float32"):
        LatentDataset(tmp_path / "bf16")


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) * 1024


def test_opening_a_cache_and_reading_a_batch_does_not_load_the_cache(tmp_path):
    import gc

    from torch.utils.data import DataLoader

    from diffit_hf.data.cache_format import write_shard

    # a cache of 4,096 rows of 4x32x32 float32 means and stds: 128 MiB, written directly (no VAE needed)
    shape, shard_size, num_shards = [4, 32, 32], 512, 8
    meta = {"vae": "synthetic", "vae_fingerprint": "0", "scaling_factor": 0.5, "resolution": 256, "grayscale": False,
            "latent_shape": shape, "num_samples": shard_size * num_shards, "shard_size": shard_size,
            "num_shards": num_shards, "class_names": None, "dtype": "float32", "random_flip": False}
    for i in range(num_shards):
        write_shard(tmp_path, i, {"mean": torch.randn(shard_size, *shape), "std": torch.rand(shard_size, *shape),
                                  "label": torch.zeros(shard_size, dtype=torch.long)}, meta)
    (tmp_path / "index.json").write_text(json.dumps(meta))
    cache_bytes = sum(p.stat().st_size for p in tmp_path.glob("shard-*"))
    assert cache_bytes > 128 * 2**20
    gc.collect()
    before = resident_bytes()
    data = LatentDataset(tmp_path, resample=True, seed=0)
    latents, _ = next(iter(DataLoader(data, batch_size=64, shuffle=True)))
    growth = resident_bytes() - before
    assert len(data) == 4096 and latents.shape == (64, 4, 32, 32) and latents.isfinite().all()
    print(f"resident memory growth {growth / 2**20:.1f} MiB for a {cache_bytes / 2**20:.0f} MiB cache")
    assert growth < cache_bytes / 10, (growth, cache_bytes)
    # the control: the measurement does see a loaded cache
    loaded = [data.read_all("mean"), data.read_all("std")]
    assert resident_bytes() - before > 0.5 * cache_bytes, (resident_bytes() - before, cache_bytes)
    del loaded


def test_encode_dataset_records_what_it_encoded(images, tmp_path):
    """The index names the dataset and split (model cards list them as the training data)."""
    from accelerate import Accelerator

    from diffit_hf.data import encode_dataset

    images.save_to_disk(str(tmp_path / "data"))
    tiny_vae().save_pretrained(tmp_path / "vae")
    encode_dataset(Accelerator(cpu=True), str(tmp_path / "vae"), str(tmp_path / "data"), tmp_path / "cache", 8,
                   grayscale=True, split="train")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["dataset"] == str(tmp_path / "data") and index["split"] == "train"


def test_encoding_in_dataloader_workers_gives_the_same_cache(images, tmp_path, monkeypatch):
    import os

    from diffit_hf.data import cache_encode

    vae = tiny_vae()
    encode(vae, images, tmp_path / "main", random_flip=True)
    preprocess, pids = cache_encode.preprocess_image, tmp_path / "pids.txt"

    def recorded(*args, **kwargs):  # which process decodes and resizes the images
        with open(pids, "a") as f:
            f.write(f"{os.getpid()}\n")
        return preprocess(*args, **kwargs)

    monkeypatch.setattr(cache_encode, "preprocess_image", recorded)
    encode(vae, images, tmp_path / "workers", random_flip=True, num_workers=2)
    workers = set(pids.read_text().split())
    assert len(workers) == 2 and str(os.getpid()) not in workers  # in the two workers, not in this process
    for name in ("mean", "std", "mean_flip", "std_flip"):
        assert torch.equal(LatentDataset(tmp_path / "main", resample=False).read_all(name),
                           LatentDataset(tmp_path / "workers", resample=False).read_all(name))
    assert LatentDataset(tmp_path / "workers").labels.tolist() == [i % 3 for i in range(10)]
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        encode(vae, images, tmp_path / "bad", num_workers=-1)
