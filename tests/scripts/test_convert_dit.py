"""pipelines/convert_dit.py: an official-format checkpoint through the real command line, and its refusals."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffit_hf import DiTModel
from diffit_hf.training.config import parse_config

from ..models.reference_dit import ReferenceDiT

ROOT = Path(__file__).resolve().parents[2]


def test_convert_cli_official_checkpoint(tmp_path, script):
    ref = ReferenceDiT(16, 2, 4, 32, 1, 2, 10, True).eval()
    torch.save(ref.state_dict(), tmp_path / "ckpt.pt")
    config = dict(sample_size=16, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=16,
                  num_classes=10)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # here --config is the DiTModel config.json (a field of ConvertConfig), not a file of flag values
    cli = [sys.executable, str(ROOT / "pipelines" / "convert_dit.py"), "--official", str(tmp_path / "ckpt.pt")]
    subprocess.run(cli + ["--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "out")], check=True)
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
                                               "--out", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="does not match the model config"):
        convert.main(cfg)
    assert not (tmp_path / "bad").exists()


def test_convert_needs_exactly_one_source(script):
    convert = script("pipelines/convert_dit.py")
    with pytest.raises(ValueError, match="exactly one of --official or --diffusers"):
        parse_config(convert.ConvertConfig, ["--out", "x"])
    with pytest.raises(ValueError, match="exactly one of --official or --diffusers"):
        parse_config(convert.ConvertConfig, ["--official", "a.pt", "--diffusers", "b", "--out", "x"])
    with pytest.raises(SystemExit):  # not a DiT preset
        parse_config(convert.ConvertConfig, ["--official", "a.pt", "--preset", "DiffiT-XL/2", "--out", "x"])
