import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

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


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
@pytest.mark.parametrize("num_classes", [10, 0])
def test_mac_formula_matches_flop_counter(block_type, num_classes):
    # FlopCounterMode sees the attention matmuls only with the math SDPA backend on CPU.
    model = DiTModel(sample_size=8, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                     num_classes=num_classes, block_type=block_type).eval()
    x = torch.randn(1, 4, 8, 12)
    y = torch.tensor([1]) if num_classes else None
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, torch.tensor([10]), y)
    assert counter.get_total_flops() == 2 * count_macs(model, 8, 12)


def test_create_model_overrides_and_unknown_name():
    model = create_model("DiT-S/8", num_classes=10, in_channels=1, learn_sigma=False, num_layers=1)
    assert model.config.num_classes == 10 and model.out_channels == 1
    with pytest.raises(ValueError, match="DiT-XL/2"):
        create_model("DiT-XXL/2")
