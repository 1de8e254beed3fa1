"""pipelines/convert_dit.py: an official-format checkpoint through the real command line, and its refusals."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image
from safetensors.torch import save_file

from diffit_hf import DiffiTModel, DiffiTPipeline, DiTModel
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.training.config import parse_config

from ..models.reference_diffit import ReferenceDiffiT
from ..models.reference_dit import ReferenceDiT

ROOT = Path(__file__).resolve().parents[2]


def test_convert_cli_official_checkpoint(tmp_path, script):
    ref = ReferenceDiT(16, 2, 4, 32, 1, 2, 10, True).eval()
    torch.save(ref.state_dict(), tmp_path / "ckpt.pt")
    config = dict(sample_size=16, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=16,
                  num_classes=10)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # here --config is the DiTModel config.json (a field of ConvertConfig), not a file of flag values
    # --vae none: the transformer folder alone
    cli = [sys.executable, str(ROOT / "pipelines" / "convert_dit.py"), "--official", str(tmp_path / "ckpt.pt")]
    subprocess.run(cli + ["--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "out"), "--vae", "none"],
                   check=True)
    model = DiTModel.from_pretrained(tmp_path / "out").eval()
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())  # its card: CC BY-NC, not ours
    assert provenance["source"] == "facebookresearch/DiT" and provenance["base_model"] is None  # custom config
    x = torch.randn(4, 4, 16, 16)
    t = torch.tensor([0, 17, 499, 999])
    y = torch.tensor([0, 3, 10, 9])  # includes the null label
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y).sample, ref(x, t, y), atol=1e-5, rtol=1e-5)

    # a preset that does not fit the checkpoint is refused with a clear message, and nothing is written
    convert = script("pipelines/convert_dit.py")
    cfg = parse_config(convert.ConvertConfig, ["--official", str(tmp_path / "ckpt.pt"), "--preset", "DiT-S/2",
                                               "--latent-size", "16", "--num-classes", "10",
                                               "--out", str(tmp_path / "bad"), "--vae", "none"])
    with pytest.raises(ValueError, match="does not match the model config"):
        convert.main(cfg)
    assert not (tmp_path / "bad").exists()


def test_convert_needs_exactly_one_source(script, tmp_path):
    convert = script("pipelines/convert_dit.py")
    ckpt = tmp_path / "a.pt"
    torch.save({}, ckpt)
    one_source = "exactly one of --official, --official-diffit or --diffusers"
    with pytest.raises(ValueError, match=one_source):
        parse_config(convert.ConvertConfig, ["--out", "x"])
    with pytest.raises(ValueError, match=one_source):
        parse_config(convert.ConvertConfig, ["--official", str(ckpt), "--diffusers", "b", "--out", "x"])
    with pytest.raises(ValueError, match="does not describe this checkpoint; valid choices are DiT-S/2"):
        parse_config(convert.ConvertConfig, ["--official", str(ckpt), "--preset", "DiffiT-XL/2", "--out", "x"])
    with pytest.raises(ValueError, match="valid choices are DiffiT-S/2"):
        parse_config(convert.ConvertConfig, ["--official-diffit", str(ckpt), "--preset", "DiT-XL/2", "--out", "x"])
    with pytest.raises(ValueError, match="No checkpoint file"):
        convert.main(parse_config(convert.ConvertConfig, ["--official-diffit", str(tmp_path / "missing.pt"),
                                                          "--out", str(tmp_path / "x")]))
    assert not (tmp_path / "x").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="not empty"):
        parse_config(convert.ConvertConfig, ["--official", str(ckpt), "--out", str(tmp_path / "taken")])


def test_convert_offline_without_the_vae_names_the_way_out(script, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    convert = script("pipelines/convert_dit.py")
    ckpt = tmp_path / "a.pt"
    torch.save({}, ckpt)
    cfg = parse_config(convert.ConvertConfig, ["--official", str(ckpt), "--out", str(tmp_path / "out"),
                                               "--vae", str(tmp_path / "no-such-vae")])
    with pytest.raises(OSError, match="pass its local folder with --vae PATH, or pass --vae none"):
        convert.main(cfg)
    assert not (tmp_path / "out").exists()


def tiny_rgb_vae() -> AutoencoderKL:
    """A seeded 2-level RGB AutoencoderKL: 16x16 pixels <-> 8x8x4 latents, SD's scaling factor."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=8, sample_size=16, scaling_factor=0.18215,
    ).eval()


def test_official_diffit_to_runnable_pipeline_and_paper_preset(tmp_path, script):
    """NVIDIA's DiffiT layout (.safetensors) -> a pipeline folder (VAE, DDPM, ImageNet names) -> generate.py with
    --preset dit-paper and a class name: the same images as the pipeline called with the paper's settings."""
    ref = ReferenceDiffiT(8, 2, 4, 32, 1, 2, 1000, True).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "diffit.safetensors"))
    tiny_rgb_vae().save_pretrained(tmp_path / "vae")
    (tmp_path / "config.json").write_text(json.dumps(dict(
        sample_size=8, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=16)))
    convert = script("pipelines/convert_dit.py")  # in-process (the CLI itself is run above)
    convert.main(parse_config(convert.ConvertConfig, [
        "--official-diffit", str(tmp_path / "diffit.safetensors"), "--config", str(tmp_path / "config.json"),
        "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "pipe")]))
    pipe = DiffiTPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(pipe.transformer, DiffiTModel) and pipe.vae is not None
    assert pipe.config.id2label[207] == "golden retriever"
    assert pipe.scheduler.config.variance_type == "learned_range"
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 999]), torch.tensor([207, 1000])
    with torch.no_grad():
        torch.testing.assert_close(pipe.transformer(x, t, y).sample, ref(x, t, y), atol=1e-5, rtol=1e-5)

    out = tmp_path / "grid.png"
    subprocess.run([sys.executable, str(ROOT / "pipelines" / "generate.py"), "--model", str(tmp_path / "pipe"),
                    "--labels", "golden retriever", "--preset", "dit-paper", "--num-per-label", "2",
                    "--device", "cpu", "--out", str(out)], check=True)
    pipe.use_scheduler("ddpm")
    images = pipe([207], num_images_per_label=2, generator=torch.Generator("cpu").manual_seed(0),
                  num_inference_steps=250, guidance_scale=1.5, guidance_channels=3).images
    expected = np.asarray(labelled_grid(images, ["golden retriever"], 2), dtype=np.int16)
    assert np.abs(np.asarray(Image.open(out), dtype=np.int16) - expected).max() <= 1
    default = pipe([207], num_images_per_label=2, generator=torch.Generator("cpu").manual_seed(0),
                   num_inference_steps=250, guidance_scale=1.5).images  # all 4 channels guided: other images
    assert not np.array_equal(np.asarray(default[0]), np.asarray(images[0]))


def test_generate_refuses_flags_a_preset_would_override(script):
    generate = script("pipelines/generate.py")
    with pytest.raises(ValueError, match="--preset dit-paper sets the sampling settings; drop --steps"):
        parse_config(generate.GenerateConfig, ["--model", ".", "--preset", "dit-paper", "--steps", "10"])
