import json
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import load_file

from diffit_hf.training.config import make_config

SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train_vae.py"

@pytest.fixture(scope="module")
def train_vae(script):
    return script("training/train_vae.py")


@pytest.fixture
def tiny_data(tmp_path):
    torch.manual_seed(0)
    pics = [Image.fromarray((torch.rand(8, 8) * 255).byte().numpy()) for _ in range(16)]
    data = Dataset.from_dict({"image": pics, "label": [0] * 16})
    for split in ("train", "test"):
        data.save_to_disk(str(tmp_path / split))
    return tmp_path


def config(train_vae, tiny_data, out, **kw):
    values = dict(dataset=str(tiny_data / "train"), eval_split="", resolution=8, block_out_channels=(8, 8),
                  norm_num_groups=8, batch_size=4, max_steps=6, checkpointing_steps=3, learning_rate=1e-2,
                  scaling_samples=16, output_dir=str(out), log_every=1)
    values.update(kw)
    return make_config(train_vae.VAETrainConfig, values)


def test_train_export_and_metrics(train_vae, tiny_data, tmp_path):
    metrics = train_vae.main(config(train_vae, tiny_data, tmp_path / "run", ema_decay=0.99))
    vae = AutoencoderKL.from_pretrained(tmp_path / "run")
    assert vae.config.scaling_factor == pytest.approx(metrics["scaling_factor"]) and metrics["scaling_factor"] > 0
    assert metrics["latent_shape"] == [4, 4, 4]
    assert json.loads((tmp_path / "run" / "train_config.json").read_text())["max_steps"] == 6
    kept = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert kept == ["checkpoint-0000003", "checkpoint-0000006"]


def test_exact_resume(train_vae, tiny_data, tmp_path):
    train_vae.main(config(train_vae, tiny_data, tmp_path / "straight"))
    train_vae.main(config(train_vae, tiny_data, tmp_path / "resumed", max_steps=3))
    train_vae.main(config(train_vae, tiny_data, tmp_path / "resumed", resume_from_checkpoint="latest"))
    a = load_file(str(tmp_path / "straight" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_loss_goes_down_and_psnr_reported(train_vae, tiny_data, tmp_path):
    short = train_vae.main(config(train_vae, tiny_data, tmp_path / "short", max_steps=1, eval_split="test",
                                  dataset=str(tiny_data / "train")))
    longer = train_vae.main(config(train_vae, tiny_data, tmp_path / "long", max_steps=40, checkpointing_steps=40,
                                   eval_split="test"))
    assert longer["psnr_db"] > short["psnr_db"] + 1.0
    assert (tmp_path / "long" / "reconstructions.png").exists()


def test_resume_latest_means_the_same_as_in_train_latent(train_vae, tiny_data, tmp_path, capsys):
    # "latest" with no checkpoint starts from scratch and says so; a named folder that is absent is an error
    metrics = train_vae.main(config(train_vae, tiny_data, tmp_path / "none", resume_from_checkpoint="latest",
                                    max_steps=3))
    assert metrics["steps"] == 3 and "no checkpoint in" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="No checkpoint to resume from"):
        train_vae.main(config(train_vae, tiny_data, tmp_path / "gone", resume_from_checkpoint=str(tmp_path / "x")))
    # both scripts store the model and its EMA the same way: save_pretrained folders
    train_vae.main(config(train_vae, tiny_data, tmp_path / "ema", ema_decay=0.9, max_steps=3))
    checkpoint = tmp_path / "ema" / "checkpoints" / "checkpoint-0000003"
    in_checkpoint = AutoencoderKL.from_pretrained(checkpoint / "vae")
    fresh = AutoencoderKL.from_config(in_checkpoint.config)  # the same architecture, untrained
    assert [n for n, _ in fresh.named_parameters()] == [n for n, _ in in_checkpoint.named_parameters()]
    assert all(torch.isfinite(p).all() for p in in_checkpoint.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), in_checkpoint.parameters()))
    assert (checkpoint / "vae_ema" / "config.json").exists()


def test_two_process_training_smoke(tiny_data, tmp_path):
    import os
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           "--dataset", str(tiny_data / "train"), "--eval-split", "", "--resolution", "8", "--block-out-channels",
           "8", "8", "--norm-num-groups", "8", "--batch-size", "4", "--max-steps", "2", "--checkpointing-steps", "2",
           "--scaling-samples", "8", "--output-dir", str(tmp_path / "ddp")]
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true")
    subprocess.run(cmd, check=True, timeout=300, env=env)
    vae = AutoencoderKL.from_pretrained(tmp_path / "ddp")
    assert vae.config.scaling_factor != 0.18215  # measured, not the default
    checkpoint = tmp_path / "ddp" / "checkpoints" / "checkpoint-0000002"
    # both ranks wrote their RNG state: two processes really ran as one job
    assert sorted(p.name for p in checkpoint.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]


def test_refusals_come_before_any_work_and_keep_the_old_run(train_vae, tiny_data, tmp_path):
    out = tmp_path / "run"
    train_vae.main(config(train_vae, tiny_data, out, max_steps=3))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(FileExistsError, match="--overwrite-output-dir"):
        train_vae.main(config(train_vae, tiny_data, out, max_steps=3))
    with pytest.raises(ValueError, match=r"changed settings \(learning_rate 0.01 -> 0.001\)"):
        train_vae.main(config(train_vae, tiny_data, out, max_steps=6, learning_rate=1e-3,
                              resume_from_checkpoint="latest"))
    with pytest.raises(ValueError, match="--resolution 9 is not divisible by the VAE's downsampling 2"):
        train_vae.main(config(train_vae, tiny_data, tmp_path / "odd", resolution=9))
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert not (tmp_path / "odd").exists()


def test_report_to_tensorboard_gets_losses_psnr_and_reconstructions(train_vae, tiny_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_vae.main(config(train_vae, tiny_data, tmp_path / "run", max_steps=2, checkpointing_steps=2,
                          eval_split="test", report_to="tensorboard", tracker_project_name="vae-test"))
    events_dir = tmp_path / "run" / "logs" / "vae-test"  # --tracker-project-name
    assert list(events_dir.glob("events.out.tfevents*"))
    events = EventAccumulator(str(events_dir))
    events.Reload()
    assert {"loss", "reconstruction", "kl", "lr", "psnr_db"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert events.Tags()["images"] == ["reconstructions"]
