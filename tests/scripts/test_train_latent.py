"""training/train_latent.py: tiny models on a tiny latent cache of real Fashion-MNIST images (synthetic images where
Debian's package is absent), a few steps each."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from diffit_hf import DiffiTPipeline
from diffit_hf.training.checkpoints import latest_checkpoint, list_checkpoints
from diffit_hf.training.config import make_config
from diffit_hf.training.runtime import bf16_matmul_hardware

from ..tiny import weights

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "training" / "train_latent.py"

def launch(args: list[str], nproc: int = 1, **popen):
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    cmd = [sys.executable, str(SCRIPT)]  # one process: the script itself, so SIGKILL reaches the trainer
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), *cmd[1:]]
    return subprocess.Popen(cmd + args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def test_run_writes_pipeline_samples_and_logs(train_latent, config, cache, tmp_path):
    out = tmp_path / "run"
    result = train_latent.main(config(cache, out, validation_steps=3, report_to="tensorboard",
                                      tracker_project_name="tiny-run", adam_beta2=0.95))
    assert result["steps"] == 6
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-0000003", "checkpoint-0000006"]
    ckpt = out / "checkpoints" / "checkpoint-0000006"
    assert (ckpt / "transformer" / "config.json").exists() and (ckpt / "transformer_ema" / "config.json").exists()
    for name in ("samples/step-0000003.png", "samples/step-0000006.png", "training_progress.gif", "loss_curve.png",
                 "README.md", "train_config.json", "logs/loss.csv"):
        assert (out / name).exists(), name
    optimizer = torch.load(ckpt / "optimizer.bin", weights_only=True)
    assert optimizer["param_groups"][0]["betas"] == (0.9, 0.95)  # --adam-beta2 reached AdamW
    # tensorboard through accelerate's tracker, in the --tracker-project-name run: losses and the validation grids
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "tiny-run"))
    events.Reload()
    assert "loss" in events.Tags()["scalars"] and [e.step for e in events.Images("samples")] == [3, 6]
    # the exported pipeline holds the EMA weights and the class names, and samples
    torch.testing.assert_close(weights(out / "transformer"), weights(ckpt / "transformer_ema"), rtol=0, atol=0)
    pipe = DiffiTPipeline.from_pretrained(out)
    assert pipe.get_label_ids("sneaker") == [7] and pipe.vae is not None
    pipe.set_progress_bar_config(disable=True)
    images = pipe(["Bag"], num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 16, 16, 1)
    # the grid has one row per class
    from PIL import Image as PILImage

    assert PILImage.open(out / "samples" / "step-0000006.png").size[1] == 10 * 16


def test_two_processes_step_together(ddp_run):
    result = json.loads((ddp_run / "train_results.json").read_text())
    assert result["num_processes"] == 2
    assert len(set(result["rank_weight_checksums"])) == 1  # DDP kept the ranks' weights identical
    states = sorted(p.name for p in (ddp_run / "checkpoints" / "checkpoint-0000004").glob("random_states_*"))
    assert states == ["random_states_0.pkl", "random_states_1.pkl"]
    # the warmup spans --lr-warmup-steps 4 optimizer steps, not 4 / 2 (accelerate steps the scheduler per process)
    rows = [line.split(",") for line in (ddp_run / "logs" / "loss.csv").read_text().splitlines()[1:]]
    assert [float(r[4]) for r in rows] == pytest.approx([2.5e-4, 5e-4, 7.5e-4] + [1e-3] * 5)


def test_exact_resume_after_sigkill(cli, cache, tmp_path):
    common = dict(max_steps=150, checkpointing_steps=30, log_every=10, batch_size=32)
    straight = launch(cli(cache, tmp_path / "straight", **common))
    log = straight.communicate(timeout=300)[0].decode()
    assert straight.returncode == 0, log

    killed_dir = tmp_path / "killed"
    killed = launch(cli(cache, killed_dir, **common), start_new_session=True)
    deadline = time.time() + 240
    while latest_checkpoint(killed_dir / "checkpoints") is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate(timeout=60)
    assert not (killed_dir / "transformer").exists()  # it did not finish
    resumed = launch(cli(cache, killed_dir, resume_from_checkpoint="latest", **common))
    log = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, log
    assert "resumed from" in log
    for sub in ("transformer", "transformer_ema"):
        a = weights(tmp_path / "straight" / "checkpoints" / "checkpoint-0000150" / sub)
        b = weights(killed_dir / "checkpoints" / "checkpoint-0000150" / sub)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (sub, key)


def test_overfitting_real_latents_lowers_the_loss(train_latent, config, cache, tmp_path):
    out = tmp_path / "overfit"
    train_latent.main(config(cache, out, max_steps=300, batch_size=32, checkpointing_steps=1000,
                             validation_steps=1000, lr_warmup_steps=20, log_every=50))
    with open(out / "logs" / "loss.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    assert len(losses) == 300
    first, last = np.mean(losses[:20]), np.mean(losses[-50:])
    assert last <= 0.7 * first, (first, last)


def test_a_run_with_another_seed_trains(train_latent, config, cache, tmp_path):
    # each micro-step's seed goes to Python, numpy and torch: one past numpy's 32 bits stopped any run with a seed
    # other than 0 at its first step (and seed-0 runs at step 4,295)
    out = tmp_path / "seed7"
    train_latent.main(config(cache, out, seed=7, max_steps=2, checkpointing_steps=2))
    with open(out / "logs" / "loss.csv") as f:
        assert [row["step"] for row in csv.DictReader(f)] == ["1", "2"]


def test_config_errors_come_before_any_work(train_latent, config, cache, tmp_path):
    with pytest.raises(ValueError, match="Unknown config keys"):
        make_config(train_latent.TrainConfig, {"max_step": 3})
    with pytest.raises(ValueError, match="Unknown preset 'DiT-Q/2'"):
        train_latent.main(config(cache, tmp_path / "a", model="DiT-Q/2"))
    with pytest.raises(ValueError, match="does not fit"):
        train_latent.main(config(cache, tmp_path / "b", model_config=json.dumps({"patch_size": 3})))
    with pytest.raises(ValueError, match="data gives 4"):
        train_latent.main(config(cache, tmp_path / "c", model_config=json.dumps({"in_channels": 3})))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="fp16"):
            train_latent.main(config(cache, tmp_path / "d", mixed_precision="fp16"))
    with pytest.raises(ValueError, match="'fp8' is not one of auto, no, bf16, fp16"):
        make_config(train_latent.TrainConfig, {"mixed_precision": "fp8"})
    auto = make_config(train_latent.TrainConfig, {"mixed_precision": "auto"}).mixed_precision
    assert auto == ("bf16" if bf16_matmul_hardware() else "no")  # resolved before anything is saved
    with pytest.raises(ValueError, match="not both"):
        train_latent.main(config(cache, tmp_path / "e", dataset="fashion-mnist"))
    with pytest.raises(ValueError, match="JSON object"):
        train_latent.main(config(cache, tmp_path / "f", model_config="num_layers=2"))
    with pytest.raises(ValueError, match="adam_beta2 must lie in \\[0, 1\\), got 1.0"):
        train_latent.main(config(cache, tmp_path / "h", adam_beta2=1.0))
    with pytest.raises(FileNotFoundError, match="No checkpoint"):
        train_latent.main(config(cache, tmp_path / "g", resume_from_checkpoint=str(tmp_path / "nope")))
    assert not any((tmp_path / name / "checkpoints").exists() for name in "abcdefgh")


def test_lr_finder_sweeps_real_batches(train_latent, config, cache, tmp_path):
    out = tmp_path / "lrf"
    result = train_latent.main(config(cache, out, lr_finder=True, lr_finder_steps=30, lr_finder_min=1e-6,
                                      lr_finder_max=1.0))
    with open(out / "lr_finder.csv") as f:
        rows = list(csv.DictReader(f))
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-6) and len(rows) >= 10
    assert result["suggested_lr"] in lrs  # which lr is suggested: tests/training/test_lr_finder.py
    assert (out / "lr_finder.png").exists() and not (out / "checkpoints").exists()


def test_edm_sigma_data_defaults_to_the_data_and_reaches_the_saved_scheduler(train_latent, config, cache, tmp_path,
                                                                              monkeypatch):
    """Unit-variance latents train and sample with sigma_data 1.0 (EDM's 0.5 is for pixels in [-1, 1])."""
    made, make = [], train_latent.make_objective
    monkeypatch.setattr(train_latent, "make_objective", lambda *a, **k: made.append(make(*a, **k)) or made[-1])
    out = tmp_path / "run"
    train_latent.main(config(cache, out, objective="edm", max_steps=2, checkpointing_steps=2))
    assert made[-1].sigma_data == 1.0
    assert DiffiTPipeline.from_pretrained(out).scheduler.config.sigma_data == 1.0
    pixels = config(cache, tmp_path / "pixels", latents=None, dataset="fashion-mnist", objective="edm")
    assert train_latent.edm_sigma_data(pixels) == 0.5
    chosen = config(cache, tmp_path / "chosen", objective="edm", edm_sigma_data=0.7)
    assert train_latent.edm_sigma_data(chosen) == 0.7
    with pytest.raises(ValueError, match="applies to the edm objective"):
        train_latent.main(config(cache, tmp_path / "eps", edm_sigma_data=0.7))

