import pytest
import torch

from diffit_hf import DiTModel
from diffit_hf.models.transformer_dit import DIT_BLOCK_TYPES

TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
            num_classes=10, class_dropout_prob=0.1)


def tiny_model(block_type="adaln_zero", **overrides) -> DiTModel:
    model = DiTModel(**{**TINY, "block_type": block_type, **overrides})
    with torch.no_grad():  # perturb zero-initialised layers so every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(n=3, h=8, w=8, c=4, num_classes=10):
    return torch.randn(n, c, h, w), torch.randint(0, 1000, (n,)), torch.randint(0, num_classes + 1, (n,))


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_non_square_sample_size_config(block_type):
    model = tiny_model(block_type, sample_size=(4, 8)).eval()
    x, t, y = inputs(h=4, w=8)
    assert model.pos_embed.shape == (2 * 4, 16)
    assert model(x, t, y).sample.shape == (3, 8, 4, 8)


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_unconditional_model(block_type):
    model = tiny_model(block_type, num_classes=0).eval()
    assert model.cond_embed.class_embedder is None
    x, t, _ = inputs()
    assert model(x, t).sample.shape == (3, 8, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.zeros(3, dtype=torch.long))


def test_label_dropout_only_in_train_mode():
    model = tiny_model(class_dropout_prob=0.5)
    y = torch.zeros(4000, dtype=torch.long)
    model.train()
    dropped = model.cond_embed.drop_labels(y)
    frac = (dropped == 10).float().mean().item()
    assert 0.45 < frac < 0.55
    x, t, y = inputs(n=64)
    y = torch.zeros(64, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        a, b = model(x, t, y).sample, model(x, t, y).sample
        null = model(x, t, torch.full_like(y, 10)).sample
    assert torch.equal(a, b) and not torch.allclose(a, null)
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        train_out = model(x, t, y).sample
    # in train mode about half the rows are computed with the null label
    matches_null = [torch.allclose(train_out[i], null[i], atol=1e-6) for i in range(64)]
    assert 16 < sum(matches_null) < 48


def test_zero_init_of_adaln_zero():
    model = DiTModel(**TINY)
    for block in model.transformer_blocks:
        assert block.adaln_linear.weight.abs().sum() == 0
    assert model.final_layer.proj_out.weight.abs().sum() == 0
    x, t, y = inputs()
    assert model(x, t, y).sample.abs().max() == 0  # identity blocks and a zero output layer
    adaln = DiTModel(**{**TINY, "block_type": "adaln"})
    assert adaln.transformer_blocks[0].adaln_linear.weight.abs().sum() > 0
    assert adaln.transformer_blocks[0].adaln_linear.weight.shape == (4 * 16, 16)


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_every_block_design_starts_with_a_zero_output_layer(block_type):
    """DiT zero-initialises the final Linear for all four designs (paper section 4), not only for adaLN-Zero."""
    model = DiTModel(**{**TINY, "block_type": block_type})
    assert model.final_layer.proj_out.weight.abs().sum() == 0 and model.final_layer.proj_out.bias.abs().sum() == 0
    x, t, y = inputs()
    assert model(x, t, y).sample.abs().max() == 0
    assert model.transformer_blocks[0].attn.to_qkv.weight.abs().sum() > 0  # the rest is not zeroed


def test_init_statistics():
    model = DiTModel(**{**TINY, "num_attention_heads": 4, "attention_head_dim": 32})
    std = model.cond_embed.class_embedder.weight.std().item()
    assert 0.015 < std < 0.025
    w = model.transformer_blocks[0].attn.to_qkv.weight
    bound = (6 / (w.shape[0] + w.shape[1])) ** 0.5  # xavier-uniform
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert model.transformer_blocks[0].attn.to_qkv.bias.abs().sum() == 0


def test_timestep_scalar_and_broadcast():
    model = tiny_model().eval()
    x, _, y = inputs()
    with torch.no_grad():
        a = model(x, 5, y).sample
        b = model(x, torch.tensor([5, 5, 5]), y).sample
        c = model(x, torch.tensor([5]), y).sample
    assert torch.equal(a, b) and torch.equal(a, c)


def test_bad_inputs_raise_clear_errors():
    # (channels, divisibility, label range, timestep/label batch: tests/models/test_model_contract.py)
    model = tiny_model().eval()
    x, t, _ = inputs()
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model(x, t, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="integer"):
        model(x, t, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="adaln_zero, adaln, cross_attn, in_context"):
        DiTModel(**{**TINY, "block_type": "film"})
    with pytest.raises(ValueError, match="divisible"):
        DiTModel(**{**TINY, "sample_size": 9})


def _loss_and_grads(model, x, t, y, precision):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = model(x, t, y).sample.float().square().mean()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("block_type", ["adaln_zero", "cross_attn"])
def test_attention_kernels_agree_in_a_training_step(precision, block_type, monkeypatch):
    """DiT's attention (no bias) through SDPA and through the explicit formula, the CPU bf16 path: same loss and
    gradients, self- and cross-attention."""
    from diffit_hf.models import layers

    calls = []
    explicit = layers.explicit_attention
    monkeypatch.setattr(layers, "explicit_attention", lambda *a: calls.append(1) or explicit(*a))
    torch.manual_seed(0)
    model = tiny_model(block_type).eval()
    x, t, y = inputs()
    results = {}
    for backend in ("sdpa", "explicit"):
        monkeypatch.setattr(layers, "attention_backend", backend)
        calls.clear()
        results[backend] = _loss_and_grads(model, x, t, y, precision)
        assert bool(calls) == (backend == "explicit"), backend  # the forced kernel is the one that ran
    (loss_a, grads_a), (loss_b, grads_b) = results["sdpa"], results["explicit"]
    tol = dict(atol=1e-5, rtol=1e-4) if precision == "fp32" else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(loss_b, loss_a, **tol)
    for name, g in grads_a.items():
        assert (grads_b[name] - g).abs().max() <= (1e-4 if precision == "fp32" else 0.05) * g.abs().max() + 1e-6, name


def test_auto_attention_takes_the_explicit_formula_in_bf16_on_a_cpu(monkeypatch):
    """"auto" sends DiT's attention to the explicit formula under bf16 autocast on a CPU (torch's flash kernel ran
    1.5-4.8x slower there) and to SDPA in fp32; an unknown backend is refused naming the valid ones."""
    from diffit_hf.models import layers

    calls = []
    explicit = layers.explicit_attention
    monkeypatch.setattr(layers, "explicit_attention", lambda *a: calls.append(a[0].dtype) or explicit(*a))
    model = tiny_model().eval()
    x, t, y = inputs()
    with torch.no_grad():
        model(x, t, y)
        assert calls == []
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, t, y)
    assert calls == [torch.bfloat16] * TINY["num_layers"]
    monkeypatch.setattr(layers, "attention_backend", "flash")
    with pytest.raises(ValueError, match="attention_backend 'flash'.*auto, sdpa, explicit"):
        model(x, t, y)
