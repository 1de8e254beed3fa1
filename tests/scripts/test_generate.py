"""pipelines/generate.py: --num-samples balanced over labels, the ADM .npz layout, PNG folders, and the same images
for 1 and 2 processes (per-sample seeds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffit_hf.training.config import make_config

from ..tiny import save_tiny_pixel_pipeline

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "pipelines" / "generate.py"


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory):
    return save_tiny_pixel_pipeline(tmp_path_factory.mktemp("gen") / "pipe", sample_size=8, patch_size=4, std=0.3)


def run(args: list[str], nproc: int = 1, cwd=ROOT) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    cmd = [sys.executable, str(SCRIPT)]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *cmd[1:]]
    proc = subprocess.run(cmd + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_npz_and_png_folder_are_the_same_samples_for_one_and_two_processes(pipe_dir, tmp_path):
    # the main process writes either output after gathering every sample, whatever the process count: one process
    # writes the PNG folder, two the .npz, and both must hold the same 7 images
    common = ["--model", str(pipe_dir), "--num-samples", "7", "--batch-size", "2", "--steps", "3",
              "--guidance-scale", "2", "--labels", "Bag", "Sneaker", "0", "--seed", "5"]
    log = run([*common, "--out", str(tmp_path / "pngs") + "/"])
    assert "sampling" in log and "wrote" in log  # one bar over the job; messages through logging
    run([*common, "--out", str(tmp_path / "two.npz")], nproc=2)

    two = np.load(tmp_path / "two.npz")
    # ADM's evaluation layout: arr_0 uint8 NHWC RGB images, arr_1 labels
    assert sorted(two.files) == ["arr_0", "arr_1"]
    assert two["arr_0"].dtype == np.uint8 and two["arr_0"].shape == (7, 8, 8, 3)
    assert np.array_equal(two["arr_0"][..., 0], two["arr_0"][..., 2])  # grayscale repeated to RGB
    assert two["arr_1"].tolist() == [8, 7, 0, 8, 7, 0, 8]  # balanced over the given labels, in order
    assert len({two["arr_0"][i].tobytes() for i in range(7)}) == 7  # every sample its own noise
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(7)]
    # 1 and 2 processes: the same N images and labels
    np.testing.assert_array_equal(np.stack([np.asarray(Image.open(p)) for p in pngs]), two["arr_0"][..., 0])
    labels = json.loads((tmp_path / "pngs" / "labels.json").read_text())
    assert [labels[p.name]["label"] for p in pngs] == two["arr_1"].tolist()
    assert labels["000000.png"] == {"label": 8, "name": "Bag"}


def test_in_process_sampling_options(script, pipe_dir, tmp_path):
    generate = script("pipelines/generate.py")
    for scheduler in ("ddim", "dpm", "euler", "heun", "ddpm"):  # every short name of an epsilon model
        cfg = make_config(generate.GenerateConfig, {"model": str(pipe_dir), "num_samples": 3, "steps": 2,
                                                    "scheduler": scheduler, "batch_size": 3,
                                                    "out": str(tmp_path / f"{scheduler}.npz")})
        generate.main(cfg)
        images = np.load(tmp_path / f"{scheduler}.npz")["arr_0"]
        assert images.shape == (3, 8, 8, 3) and images.std() > 0, scheduler
    cfg = make_config(generate.GenerateConfig, {"model": str(pipe_dir), "scheduler": "euler", "out": str(
        tmp_path / "grid.png"), "labels": ["Bag"], "num_per_label": 2, "steps": 2, "device": "cpu"})
    generate.main(cfg)
    assert Image.open(tmp_path / "grid.png").size[0] == 8
    # --guidance-interval reaches the pipeline: an interval no step falls in samples as guidance 1 does
    outs = {}
    for name, flags in {"cfg1": {"guidance_scale": 1.0}, "never": {"guidance_interval": (1e6, 2e6)},
                        "cfg4": {}}.items():
        generate.main(make_config(generate.GenerateConfig, {"model": str(pipe_dir), "num_samples": 3, "steps": 2,
                                                            "out": str(tmp_path / f"{name}.npz"), **flags}))
        outs[name] = np.load(tmp_path / f"{name}.npz")["arr_0"]
    np.testing.assert_array_equal(outs["never"], outs["cfg1"])
    assert not np.array_equal(outs["cfg4"], outs["cfg1"])


def test_bf16_sampling(script, pipe_dir, tmp_path):
    generate = script("pipelines/generate.py")
    generate.main(make_config(generate.GenerateConfig, {"model": str(pipe_dir), "num_samples": 2, "steps": 2,
                                                        "dtype": "bf16", "out": str(tmp_path / "bf16.npz")}))
    fp32 = tmp_path / "fp32.npz"
    generate.main(make_config(generate.GenerateConfig, {"model": str(pipe_dir), "num_samples": 2, "steps": 2,
                                                        "out": str(fp32)}))
    diff = np.abs(np.load(tmp_path / "bf16.npz")["arr_0"].astype(int) - np.load(fp32)["arr_0"].astype(int))
    assert diff.mean() < 8  # bf16 rounding, not another image


def test_generate_refuses_what_it_cannot_write(script, pipe_dir, tmp_path):
    generate = script("pipelines/generate.py")
    base = {"model": str(pipe_dir)}
    with pytest.raises(ValueError, match="--num-samples writes an .npz or a folder of PNGs"):
        make_config(generate.GenerateConfig, {**base, "num_samples": 4, "out": str(tmp_path / "g.png")})
    with pytest.raises(ValueError, match="needs --num-samples N"):
        make_config(generate.GenerateConfig, {**base, "out": str(tmp_path / "s.npz")})
    with pytest.raises(ValueError, match="needs --num-samples N"):
        make_config(generate.GenerateConfig, {**base, "out": str(tmp_path) + "/"})
    with pytest.raises(ValueError, match="--dtype fp16 needs a GPU"):
        make_config(generate.GenerateConfig, {**base, "dtype": "fp16", "device": "cpu"})
    with pytest.raises(ValueError, match="--batch-size must be >= 1"):
        make_config(generate.GenerateConfig, {**base, "batch_size": 0})
    with pytest.raises(ValueError, match="not one of fp32, bf16, fp16"):
        make_config(generate.GenerateConfig, {**base, "dtype": "fp8"})
