import pytest
import torch
from diffusers import DiTTransformer2DModel

import diffit_hf.models.presets as presets
from diffit_hf import DiffiTModel, DiTModel, convert_diffusers_dit, convert_official_diffit, convert_official_dit
from diffit_hf.models.embeddings import get_2d_sincos_pos_embed

from .reference_diffit import ReferenceDiffiT
from .reference_dit import ReferenceDiT, mae_pos_embed

CONFIGS = [  # (sample_size, patch, depth, heads, head_dim, classes, learn_sigma)
    (16, 2, 2, 4, 16, 10, True),
    (32, 4, 3, 2, 24, 7, False),
]


def _assert_same_outputs(ref, model, x, t, y) -> torch.Tensor:
    """The converted model's output equals the reference forward's (which is non-trivial); returns it."""
    with torch.no_grad():
        expected = ref(x, t, y)
        actual = model(x, t, y).sample
    assert actual.shape == expected.shape
    assert expected.abs().max() > 0.1  # non-trivial output
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    return expected


def _inputs(sample_size, in_channels, num_classes, n=4):
    x = torch.randn(n, in_channels, sample_size, sample_size)
    t = torch.tensor([0, 17, 499, 999])[:n]
    y = torch.tensor([0, 3, num_classes, num_classes - 1])[:n]  # includes the null label
    return x, t, y


def test_pos_embed_matches_mae_numpy_table():
    for dim, grid in [(64, 8), (1152, 16)]:
        ref = torch.from_numpy(mae_pos_embed(dim, grid)).float()
        assert torch.allclose(get_2d_sincos_pos_embed(dim, (grid, grid)), ref, atol=1e-6)


def test_pos_embed_non_square_is_a_crop_of_the_square_table():
    # plain integer positions: rows 0..3 of an 8x8 grid equal a 4x8 grid's table
    square = get_2d_sincos_pos_embed(32, (8, 8)).reshape(8, 8, 32)
    wide = get_2d_sincos_pos_embed(32, (4, 8)).reshape(4, 8, 32)
    assert torch.allclose(square[:4], wide, atol=1e-6)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_official_layout_parity(cfg):
    size, p, depth, heads, head_dim, classes, learn_sigma = cfg
    ref = ReferenceDiT(size, p, 4, heads * head_dim, depth, heads, classes, learn_sigma).eval()
    model = convert_official_dit(
        ref.state_dict(),
        dict(sample_size=size, patch_size=p, in_channels=4, num_layers=depth, num_attention_heads=heads,
             attention_head_dim=head_dim, num_classes=classes, learn_sigma=learn_sigma),
    )
    x, t, y = _inputs(size, 4, classes)
    _assert_same_outputs(ref, model, x, t, y)


def test_official_ema_checkpoint_and_mismatch_errors():
    ref = ReferenceDiT(16, 2, 4, 32, 1, 2, 10, True)
    config = dict(sample_size=16, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=16,
                  num_classes=10)
    model = convert_official_dit({"model": {}, "ema": ref.state_dict()}, config)
    assert torch.equal(model.transformer_blocks[0].attn.to_qkv.weight, ref.blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="missing"):
        convert_official_dit(ref.state_dict(), dict(config, num_layers=2))
    with pytest.raises(ValueError, match="shape"):
        convert_official_dit(ref.state_dict(), dict(config, num_classes=12))
    with pytest.raises(ValueError, match="pos_embed"):
        convert_official_dit(ref.state_dict(), dict(config, sample_size=32))


def _exact_diffusers_dit(size, p, depth, heads, head_dim, classes, learn_sigma):
    """diffusers DiT configured to compute what the original computes, with random tied embedders."""
    model = DiTTransformer2DModel(
        num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
        out_channels=8 if learn_sigma else 4, num_layers=depth, sample_size=size, patch_size=p,
        num_embeds_ada_norm=classes, norm_eps=1e-6,
    ).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.1)  # perturb every (incl. zero-initialised) layer
        first = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks:
            block.norm1.emb.load_state_dict(first.state_dict())  # tie per-block embedders
            block.norm1.emb.time_proj.downscale_freq_shift = 0  # original DiT frequencies
    return model


@pytest.mark.parametrize("cfg", CONFIGS)
def test_diffusers_parity(cfg):
    size, p, depth, heads, head_dim, classes, learn_sigma = cfg
    reference = _exact_diffusers_dit(*cfg)
    model = convert_diffusers_dit(reference)
    assert isinstance(model, DiTModel) and model.config.num_classes == classes
    x, t, y = _inputs(size, 4, classes)
    with torch.no_grad():
        expected = reference(x, t, y).sample
        actual = model(x, t, y).sample
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_diffusers_default_differs_only_by_documented_details():
    # With diffusers' own defaults (shift 1, eps 1e-5) the same weights move outputs, but only slightly.
    cfg = CONFIGS[0]
    reference = _exact_diffusers_dit(*cfg)
    model = convert_diffusers_dit(reference)
    for block in reference.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 1
    x, t, y = _inputs(cfg[0], 4, cfg[5])
    with torch.no_grad():
        diff = (model(x, t, y).sample - reference(x, t, y).sample).abs().max()
    assert 1e-4 < diff < 5.0


def test_diffusers_untied_embedders_are_refused():
    model = _exact_diffusers_dit(*CONFIGS[0])
    with torch.no_grad():
        model.transformer_blocks[1].norm1.emb.timestep_embedder.linear_1.weight.add_(1.0)
    with pytest.raises(ValueError, match="embedder"):
        convert_diffusers_dit(model)


# ---- NVIDIA's latent DiffiT release ----

DIFFIT_CONFIGS = [  # (latent size, depth, heads, head_dim, classes, learn_sigma): 4x4 and 8x8 token grids
    (8, 2, 2, 16, 10, True),
    (16, 1, 4, 8, 7, False),
]


def _diffit_config(size, depth, heads, head_dim, classes, learn_sigma):
    return dict(sample_size=size, patch_size=2, in_channels=4, num_layers=depth, num_attention_heads=heads,
                attention_head_dim=head_dim, num_classes=classes, learn_sigma=learn_sigma)


def test_official_diffit_key_layout_is_the_released_one():
    # the key names and shapes of NVlabs/DiffiT `diffit/diffit.py` (DiffiT-XL/2 at 256 px: 16x16 tokens)
    ref = ReferenceDiffiT(8, 2, 4, 32, 1, 2, 10, True)
    keys = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert keys["blocks.0.attn.relative_position_bias_table"] == (49, 2)  # (2 * 4 - 1)^2, heads
    assert keys["blocks.0.attn.relative_position_index"] == (16, 16)
    assert keys["blocks.0.attn.qkv_temb.weight"] == (96, 32)
    assert keys["y_embedder.embedding_table.weight"] == (11, 32)
    assert keys["pos_embed"] == (1, 16, 32)
    assert "final_layer.linear.weight" in keys and not any("adaLN" in k for k in keys)


@pytest.mark.parametrize("cfg", DIFFIT_CONFIGS)
def test_official_diffit_parity(cfg):
    size, depth, heads, head_dim, classes, learn_sigma = cfg
    ref = ReferenceDiffiT(size, 2, 4, heads * head_dim, depth, heads, classes, learn_sigma).eval()
    model = convert_official_diffit(ref.state_dict(), _diffit_config(*cfg))
    x, t, y = _inputs(size, 4, classes)
    expected = _assert_same_outputs(ref, model, x, t, y)
    # the relative position bias reaches the output: perturbing one table entry changes it
    with torch.no_grad():
        model.transformer_blocks[0].attn.rel_pos_bias.table[0, 0] += 1.0
        assert not torch.allclose(model(x, t, y).sample, expected, atol=1e-4)


def test_official_diffit_preset_reads_the_latent_size_from_the_checkpoint(monkeypatch):
    # a preset name converts both resolutions: the latent size comes from pos_embed (or else the bias table)
    tiny = dict(presets.DIT_DEFAULTS, num_layers=1, num_attention_heads=2, attention_head_dim=16, patch_size=2)
    monkeypatch.setitem(presets.PRESETS, "DiffiT-tiny/2", (DiffiTModel, tiny))
    for size in (8, 16):
        state_dict = ReferenceDiffiT(size, 2, 4, 32, 1, 2, 1000, True).state_dict()
        assert convert_official_diffit(state_dict, "DiffiT-tiny/2").config.sample_size == size
        del state_dict["pos_embed"]
        assert convert_official_diffit(state_dict, "DiffiT-tiny/2").config.sample_size == size


def test_official_diffit_refuses_mismatches():
    ref = ReferenceDiffiT(8, 2, 4, 32, 1, 2, 10, True)
    config = _diffit_config(8, 1, 2, 16, 10, True)
    model = convert_official_diffit({"model": {}, "ema": ref.state_dict()}, config)
    assert torch.equal(model.transformer_blocks[0].attn.to_qkv_time.weight, ref.blocks[0].attn.qkv_temb.weight)
    with pytest.raises(ValueError, match="window_size=None"):
        convert_official_diffit(ref.state_dict(), {**config, "window_size": 2})
    with pytest.raises(ValueError, match="pos_embed"):
        convert_official_diffit(ref.state_dict(), {**config, "sample_size": 16})
    bad = dict(ref.state_dict())
    bad["blocks.0.attn.relative_position_index"] = bad["blocks.0.attn.relative_position_index"].T.flip(0)
    with pytest.raises(ValueError, match="relative position index"):
        convert_official_diffit(bad, config)
    with pytest.raises(ValueError, match="missing"):
        convert_official_diffit(ref.state_dict(), {**config, "num_layers": 2})
    with pytest.raises(ValueError, match="not a latent DiffiT"):
        convert_official_diffit(ref.state_dict(), "DiT-S/2")
