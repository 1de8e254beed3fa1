import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

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
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_output_shape_square_and_non_square(block_type, learn_sigma):
    model = tiny_model(block_type, learn_sigma=learn_sigma).eval()
    for h, w in [(8, 8), (8, 12), (6, 4)]:
        x, t, y = inputs(h=h, w=w)
        out = model(x, t, y).sample
        assert out.shape == (3, 8 if learn_sigma else 4, h, w)
        assert torch.isfinite(out).all()


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


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_return_dict_equals_tuple_and_eval_determinism(block_type):
    model = tiny_model(block_type).eval()
    x, t, y = inputs()
    with torch.no_grad():
        out = model(x, t, y)
        (tup,) = model(x, t, y, return_dict=False)
    assert isinstance(out, Transformer2DModelOutput)
    assert torch.equal(out.sample, tup)


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_save_load_round_trip_bit_exact(block_type, tmp_path):
    model = tiny_model(block_type, sample_size=(8, 6)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = DiTModel.from_pretrained(tmp_path).eval()
    assert loaded.config.block_type == block_type
    assert "pos_embed" not in model.state_dict()  # frozen table stays out of the checkpoint
    x, t, y = inputs(h=8, w=6)
    with torch.no_grad():
        assert torch.equal(model(x, t, y).sample, loaded(x, t, y).sample)


def _loss_and_grads(model, x, t, y):
    model.zero_grad()
    loss = model(x, t, y).sample.square().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_gradient_checkpointing_same_loss_and_grads(block_type):
    model = tiny_model(block_type, class_dropout_prob=0.0).train()
    x, t, y = inputs()
    loss_ref, grads_ref = _loss_and_grads(model, x, t, y)
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(model, x, t, y)
    torch.testing.assert_close(loss_ckpt, loss_ref)
    for name, grad in grads_ref.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_every_parameter_gets_a_gradient(block_type):
    model = tiny_model(block_type, class_dropout_prob=0.0).train()
    x, t, _ = inputs(n=11)
    y = torch.arange(11)  # every row of the label table, null included
    model(x, t, y).sample.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_training_reduces_loss(block_type):
    torch.manual_seed(0)
    model = DiTModel(**{**TINY, "block_type": block_type, "class_dropout_prob": 0.0}).train()
    x, t, y = inputs(n=8)
    target = torch.randn(8, 8, 8, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (model(x, t, y).sample - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


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
    model = tiny_model().eval()
    x, t, y = inputs()
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(3, 3, 8, 8), t, y)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(3, 4, 7, 8), t, y)
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model(x, t, torch.tensor([0, 11, 2]))
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        model(x, t, torch.tensor([0, -1, 2]))
    with pytest.raises(ValueError, match="timestep"):
        model(x, torch.tensor([1, 2]), y)
    with pytest.raises(ValueError, match="class_labels"):
        model(x, t, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="adaln_zero, adaln, cross_attn, in_context"):
        DiTModel(**{**TINY, "block_type": "film"})
    with pytest.raises(ValueError, match="divisible"):
        DiTModel(**{**TINY, "sample_size": 9})


@pytest.mark.parametrize("block_type", DIT_BLOCK_TYPES)
def test_bf16_autocast_close_to_fp32(block_type):
    model = tiny_model(block_type).eval()
    x, t, y = inputs()
    with torch.no_grad():
        ref = model(x, t, y).sample
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, t, y).sample
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05
