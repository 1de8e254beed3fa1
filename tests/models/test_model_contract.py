"""The shared forward contract, checked on tiny configs of every model family and variant."""

import json

import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from diffit_hf import DiffiTUNetModel

from .variants import VARIANTS, build, inputs


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_output_shapes(name, learn_sigma):
    model = build(name, learn_sigma=learn_sigma).eval()
    c = model.config.in_channels
    for hw in VARIANTS[name][2]:
        x, t, y = inputs(model, hw=hw)
        out = model(x, t, y).sample
        assert out.shape == (3, 2 * c if learn_sigma else c, *hw)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_return_dict_equals_tuple_and_determinism(name):
    model = build(name).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        out = model(x, t, y)
        (tup,) = model(x, t, y, return_dict=False)
    assert isinstance(out, Transformer2DModelOutput)
    assert torch.equal(out.sample, tup)


@pytest.mark.parametrize("name", VARIANTS)
def test_save_load_round_trip_bit_exact(name, tmp_path):
    model = build(name).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = type(model).from_pretrained(tmp_path).eval()
    def public(cfg):  # JSON turns tuples into lists
        return json.loads(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))

    assert public(loaded.config) == public(model.config)
    x, t, y = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(x, t, y).sample, loaded(x, t, y).sample)


def checkpointed_blocks(model) -> list[torch.nn.Module]:
    """The blocks a model runs through `_gradient_checkpointing_func` when gradient checkpointing is on."""
    if isinstance(model, DiffiTUNetModel):
        return [block for level in (*model.down_blocks, *model.up_blocks) for block in level]
    return list(model.transformer_blocks)


def _forward_backward(model, x, t, y):
    """Loss, gradients, and how often each checkpointed block ran in the forward and in the backward pass."""
    blocks = checkpointed_blocks(model)
    calls = [0] * len(blocks)

    def count(index):
        def hook(module, args):
            calls[index] += 1

        return hook

    handles = [block.register_forward_pre_hook(count(i)) for i, block in enumerate(blocks)]
    model.zero_grad()
    loss = model(x, t, y).sample.square().mean()
    forward_calls = list(calls)
    loss.backward()
    backward_calls = [total - forward for total, forward in zip(calls, forward_calls)]
    for handle in handles:
        handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return loss.detach(), grads, forward_calls, backward_calls


@pytest.mark.parametrize("name", VARIANTS)
def test_gradient_checkpointing_recomputes_blocks_with_same_loss_and_grads(name):
    model = build(name, class_dropout_prob=0.0).train()
    x, t, y = inputs(model)
    num_blocks = len(checkpointed_blocks(model))
    assert num_blocks >= 2

    loss_ref, grads_ref, forward_calls, backward_calls = _forward_backward(model, x, t, y)
    assert forward_calls == [1] * num_blocks and backward_calls == [0] * num_blocks  # nothing to recompute

    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    loss_ckpt, grads_ckpt, forward_calls, backward_calls = _forward_backward(model, x, t, y)
    # each block's activations were dropped after the forward pass and recomputed during the backward pass
    assert forward_calls == [1] * num_blocks and backward_calls == [1] * num_blocks
    torch.testing.assert_close(loss_ckpt, loss_ref)
    for key, grad in grads_ref.items():
        torch.testing.assert_close(grads_ckpt[key], grad, msg=key)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_gets_a_gradient(name):
    model = build(name, class_dropout_prob=0.0).train()
    x, t, _ = inputs(model, n=11)
    y = torch.arange(11) if model.config.num_classes else None  # every label row, null included
    model(x, t, y).sample.square().mean().backward()
    for key, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, key


@pytest.mark.parametrize("name", VARIANTS)
def test_training_reduces_loss(name):
    torch.manual_seed(0)
    cls, config, _ = VARIANTS[name]
    model = cls(**{**config, "class_dropout_prob": 0.0}).train()
    x, t, y = inputs(model, n=8)
    out_c = model(x, t, y).sample.shape[1]
    target = x.repeat(1, out_c // x.shape[1], 1, 1)  # learn the identity: reachable by every variant
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = (model(x, t, y).sample - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("name", VARIANTS)
def test_output_depends_on_timestep_and_label(name):
    model = build(name).eval()
    x, _, y = inputs(model)
    with torch.no_grad():
        a = model(x, torch.full((3,), 10), y).sample
        b = model(x, torch.full((3,), 900), y).sample
    assert not torch.allclose(a, b, atol=1e-5)
    if model.config.num_classes:
        with torch.no_grad():
            c = model(x, torch.full((3,), 10), torch.full((3,), model.config.num_classes)).sample
        assert not torch.allclose(a, c, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_bad_inputs_raise_clear_errors(name):
    model = build(name).eval()
    x, t, y = inputs(model)
    c = model.config.in_channels
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(3, c + 1, *x.shape[-2:]), t, y)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(3, c, x.shape[-2] + 1, x.shape[-1]), t, y)
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.tensor([1, 2]), y)
    if model.config.num_classes:
        with pytest.raises(ValueError, match=r"\[0, 10\]"):
            model(x, t, torch.tensor([0, 11, 2]))
        with pytest.raises(ValueError, match="class_labels"):
            model(x, t, torch.tensor([1, 2]))
    else:
        with pytest.raises(ValueError, match="unconditional"):
            model(x, t, torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("name", VARIANTS)
def test_bf16_autocast_close_to_fp32(name):
    model = build(name).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        ref = model(x, t, y).sample
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y).sample
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.parametrize("name", VARIANTS)
def test_inputs_of_another_dtype_are_named(name):
    model = build(name).eval()
    x, t, y = inputs(model)
    with pytest.raises(ValueError, match="hidden_states is torch.float64 but the model is torch.float32"):
        model(x.double(), t, y)
    with pytest.raises(ValueError, match="must be a floating-point tensor"):
        model(x.long(), t, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts: allowed
        assert model(x, t, y).sample.shape[0] == x.shape[0]
