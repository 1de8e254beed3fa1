"""`--compile` readiness: every model family traces into one graph (no graph breaks, so the block loop compiles as a
whole), with and without gradient checkpointing. Dynamo tracing only (no inductor): seconds, not a cold compile."""

import pytest
import torch

from diffit_hf import DiffiTModel, DiffiTUNetModel, DiTModel

TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
            num_classes=10)
FAMILIES = {
    "dit": lambda: DiTModel(**TINY),
    "dit_cross_attn": lambda: DiTModel(**TINY, block_type="cross_attn"),
    "diffit_windowed": lambda: DiffiTModel(**TINY, window_size=2),
    "diffit_unet": lambda: DiffiTUNetModel(sample_size=8, in_channels=1, block_out_channels=(16, 32),
                                           layers_per_block=(1, 1), window_size=2, attention_head_dim=8,
                                           norm_num_groups=8, num_classes=10),
}


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_forward_has_no_graph_breaks(family, checkpointing):
    model = FAMILIES[family]().train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    x = torch.randn(2, model.config.in_channels, 8, 8)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x, torch.tensor([3, 500]), torch.tensor([1, 9]))
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_count == 1
