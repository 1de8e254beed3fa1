import pytest
import torch

from diffit_hf import DiTModel, count_macs, count_parameters, create_model, list_presets
from diffit_hf.models.transformer_dit import DIT_BLOCK_TYPES

# Official architecture counts, which include the frozen positional table (a buffer here), and paper GMACs.
EXPECTED_PARAMS = {"DiT-XL/2": 675_129_632, "DiT-S/2": 32_963_360, "DiT-B/2": 130.5e6, "DiT-L/2": 458.1e6}
PAPER_GMACS = {"DiT-S/2": 6.06, "DiT-B/2": 23.0, "DiT-L/2": 80.7, "DiT-XL/2": 118.6, "DiT-XL/4": 29.05,
               "DiT-S/4": 1.41, "DiT-S/8": 0.36, "DiT-B/4": 5.57, "DiT-L/4": 19.7, "DiT-XL/8": 7.39}


def test_twelve_dit_presets():
    names = [n for n in list_presets() if n.startswith("DiT-")]
    assert names == [f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8)]


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_preset_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    params = count_parameters(model)
    assert params == sum(p.numel() for p in model.parameters())  # everything trainable
    with_table = params + model.pos_embed.numel()
    expected = EXPECTED_PARAMS[name]
    if isinstance(expected, int):
        assert with_table == expected
    else:
        assert abs(with_table - expected) / expected < 1e-3
    if name == "DiT-XL/2":
        assert params == 674_834_720


@pytest.mark.parametrize("name", list(PAPER_GMACS))
def test_preset_macs_match_paper(name):
    assert abs(count_macs(name) / 1e9 - PAPER_GMACS[name]) / PAPER_GMACS[name] < 0.03


def closed_form_dit_macs(depth, dim, p, h, w, block_type="adaln_zero", n_cond=2, c_in=4, c_out=8, mlp=4):
    """DiT forward MACs written out from the architecture (every GEMM + the two attention matmuls)."""
    tokens = (h // p) * (w // p)
    macs = tokens * c_in * p * p * dim + 256 * dim + dim * dim + tokens * dim * p * p * c_out
    seq = tokens + n_cond if block_type == "in_context" else tokens
    per_block = 4 * seq * dim * dim + 2 * seq * seq * dim + 2 * mlp * seq * dim * dim
    if block_type in ("adaln_zero", "adaln"):
        per_block += (6 if block_type == "adaln_zero" else 4) * dim * dim
        macs += 2 * dim * dim
    elif block_type == "cross_attn":
        per_block += 2 * seq * dim * dim + 2 * n_cond * dim * dim + 2 * seq * n_cond * dim
    return macs + depth * per_block


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
@pytest.mark.parametrize("num_classes", [10, 0])
def test_count_macs_matches_closed_form(block_type, num_classes):
    model = DiTModel(sample_size=8, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                     num_classes=num_classes, block_type=block_type)
    expected = closed_form_dit_macs(2, 32, 2, 8, 12, block_type, n_cond=2 if num_classes else 1)
    assert count_macs(model, 8, 12) == expected
    n_cond = 2 if num_classes else 1
    seq = 4 * 6 + n_cond * (block_type == "in_context")  # 8x12 latent, patch 2
    attention = 2 * (2 * seq * seq * 32)  # 2 blocks x (q k^T + attn v)
    if block_type == "cross_attn":
        attention += 2 * (2 * seq * n_cond * 32)
    assert count_macs(model, 8, 12, include_attention=False) == expected - attention


def test_closed_form_matches_xl2_preset():
    assert count_macs("DiT-XL/2") == closed_form_dit_macs(28, 1152, 2, 32, 32)


def test_create_model_overrides_and_unknown_name():
    model = create_model("DiT-S/8", num_classes=10, in_channels=1, learn_sigma=False, num_layers=1)
    assert model.config.num_classes == 10 and model.out_channels == 1
    with pytest.raises(ValueError, match="DiT-XL/2"):
        create_model("DiT-XXL/2")


LATENT_BAD = [("class_dropout_prob", 1.0), ("class_dropout_prob", -0.1), ("in_channels", 0), ("num_layers", 0),
              ("num_attention_heads", 0), ("attention_head_dim", 0), ("patch_size", 0)]
BAD_VALUES = [("DiT-S/2", k, v) for k, v in LATENT_BAD] + [("DiffiT-S/2", k, v) for k, v in LATENT_BAD] + [
    ("DiffiT-S/2", "window_size", 0), ("DiffiT-CIFAR10", "class_dropout_prob", 1.0),
    ("DiffiT-CIFAR10", "in_channels", 0), ("DiffiT-CIFAR10", "window_size", 0),
    ("DiffiT-CIFAR10", "attention_head_dim", 0)]


@pytest.mark.parametrize("preset, key, value", BAD_VALUES)
def test_config_values_out_of_range_name_the_argument(preset, key, value):
    with pytest.raises(ValueError, match=rf"{key} must (lie in \[0, 1\)|be >= 1), got {value}"):
        create_model(preset, **{key: value})


def test_unknown_model_config_keys_list_the_valid_keys():
    with pytest.raises(ValueError, match=r"Unknown DiTModel config keys \['num_layer'\] for DiT-S/2; valid keys are "
                                         r"sample_size, patch_size"):
        create_model("DiT-S/2", num_layer=3)
