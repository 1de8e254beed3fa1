"""Fixtures of the script tests: a tiny latent cache of real Fashion-MNIST images and the train_latent script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image

from diffit_hf.data import encode_to_cache
from diffit_hf.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from diffit_hf.training.config import make_config

from ..tiny import tiny_vae

TINY_MODEL = json.dumps({"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16})


def real_images(n: int) -> Dataset:
    if FASHION_MNIST_DIR.is_dir():
        return load_fashion_mnist(splits=("train",))["train"].select(range(n))
    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    return Dataset.from_dict({"image": list(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                              "label": [i % 10 for i in range(n)]}, features=features)


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """256 images at 16x16 -> 8x8x4 latents with a small (untrained) VAE, saved so the pipeline can decode."""
    root = tmp_path_factory.mktemp("cache")
    vae = tiny_vae(sample_size=16, scaling_factor=0.5)
    vae.save_pretrained(root / "vae")
    encode_to_cache(vae, real_images(256), root / "latents", resolution=16, grayscale=True, vae_id=str(root / "vae"),
                    shard_size=128, progress=False)
    return root / "latents"


@pytest.fixture(scope="module")
def train_latent(script):
    return script("training/train_latent.py")


@pytest.fixture
def config(train_latent):
    """config(cache, out, **overrides) -> a TrainConfig for a tiny run."""
    return lambda cache, out, **kw: _config(train_latent, cache, out, **kw)


def _config(train_latent, cache, out, **kw):
    """A TrainConfig for a tiny run (2-block DiT-S/2 on 8x8x4 latents) of `train_latent`."""
    values = dict(latents=str(cache), model="DiT-S/2", model_config=TINY_MODEL, batch_size=16, max_steps=6,
                  learning_rate=1e-3, checkpointing_steps=3, validation_steps=100, validation_per_class=1,
                  validation_inference_steps=2, log_every=2, output_dir=str(out), cpu_threads=1)
    values.update(kw)
    return make_config(train_latent.TrainConfig, values)




@pytest.fixture(scope="session")
def cli():
    """cli(cache, out, **flags) -> train_latent.py command-line arguments for a tiny run."""

    def args(cache, out, **kw) -> list[str]:
        values = dict(latents=cache, model_config=TINY_MODEL, batch_size=16, learning_rate=1e-3,
                      validation_steps=1000, validation_per_class=1, validation_inference_steps=2, cpu_threads=1,
                      output_dir=out)
        values.update(kw)
        return [a for k, v in values.items() for a in ("--" + k.replace("_", "-"), str(v))]

    return args


# a short run with a checkpoint half-way, shared by the multi-process tests (test_train_latent, test_distributed);
# the lr warms up over the first 4 steps (accelerate steps a prepared scheduler once per process)
DISTRIBUTED_STEPS = dict(max_steps=8, checkpointing_steps=4, log_every=2, validation_steps=4,
                         lr_scheduler="constant_with_warmup", lr_warmup_steps=4)


@pytest.fixture(scope="session")
def ddp_run(cli, cache, tmp_path_factory) -> Path:
    """One node, two DDP processes (`torchrun --standalone --nproc_per_node 2`): the reference of the FSDP and
    multi-node tests."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "training/train_latent.py", *cli(cache, out, **DISTRIBUTED_STEPS)]
    proc = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true"),
                          cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout.decode()[-4000:]
    return out
