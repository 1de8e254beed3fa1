"""The papers' sampling presets: the table's settings and the sizes they are defined for."""

import pytest

from diffit_hf.pipelines.schedules import sampling_preset


def test_dit_paper_preset_for_any_size():
    for size in (32, 64, 8):
        assert sampling_preset("dit-paper", size) == dict(
            scheduler="ddpm", num_inference_steps=250, guidance_scale=1.5, guidance_schedule="constant",
            guidance_channels=3)


def test_diffit_paper_preset_depends_on_the_resolution():
    at_256 = sampling_preset("diffit-paper", 32)
    at_512 = sampling_preset("diffit-paper", (64, 64))
    assert (at_256["guidance_scale"], at_256["guidance_schedule"], at_256["guidance_scale_pow"]) == (
        4.4, "power_cosine", 4.0)  # NVIDIA sample.py: --cfg-scale 4.4, --scale_pow 4
    assert (at_512["guidance_scale"], at_512["guidance_schedule"]) == (1.49, "constant")
    for preset in (at_256, at_512):
        assert (preset["scheduler"], preset["num_inference_steps"], preset["guidance_channels"]) == ("ddpm", 250, 3)
    at_256["guidance_scale"] = 0  # a copy: the table stays intact
    assert sampling_preset("diffit-paper", 32)["guidance_scale"] == 4.4


def test_presets_refuse_unknown_names_and_sizes():
    with pytest.raises(ValueError, match="32x32 \\(256 px\\) and 64x64 \\(512 px\\) latents, not 16"):
        sampling_preset("diffit-paper", 16)
    with pytest.raises(ValueError, match="not \\(32, 64\\)"):
        sampling_preset("diffit-paper", (32, 64))
    with pytest.raises(ValueError, match="valid choices are dit-paper, diffit-paper"):
        sampling_preset("edm-paper", 32)
