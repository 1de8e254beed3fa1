import math

import pytest
import torch

from diffit_hf import DiffiTModel, DiffiTUNetModel, count_macs, count_parameters, create_model
from diffit_hf.models import layers
from diffit_hf.models.layers import window_merge, window_partition
from diffit_hf.models.transformer_diffit import TMSA, PoolMixer, RelativePositionBias


def _tmsa(dim=16, heads=2, window=(3, 4), time_dim=8):
    module = TMSA(dim, heads, window, time_dim)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(std=0.3)
    return module


def _explicit_tmsa(module, x_s, x_t, grid):
    """Eq. 3-6 written out with the module's own weight slices."""
    dim, heads = x_s.shape[-1], module.num_heads
    w_s, b_s = module.to_qkv.weight, module.to_qkv.bias
    w_t, b_t = module.to_qkv_time.weight, module.to_qkv_time.bias
    outs = []
    for n in range(x_s.shape[0]):
        q = x_s[n] @ w_s[:dim].T + b_s[:dim] + x_t[n] @ w_t[:dim].T + b_t[:dim]  # Eq. 3
        k = x_s[n] @ w_s[dim:2 * dim].T + b_s[dim:2 * dim] + x_t[n] @ w_t[dim:2 * dim].T + b_t[dim:2 * dim]  # Eq. 4
        v = x_s[n] @ w_s[2 * dim:].T + b_s[2 * dim:] + x_t[n] @ w_t[2 * dim:].T + b_t[2 * dim:]  # Eq. 5
        head_outs = []
        d = dim // heads
        bias = _direct_bias(module.rel_pos_bias, grid)
        for h in range(heads):
            qh, kh, vh = (m[:, h * d:(h + 1) * d] for m in (q, k, v))
            attn = torch.softmax(qh @ kh.T / math.sqrt(d) + bias[h], dim=-1)  # Eq. 6
            head_outs.append(attn @ vh)
        outs.append(torch.cat(head_outs, dim=-1) @ module.to_out.weight.T + module.to_out.bias)
    return torch.stack(outs)


def _direct_bias(rpb, grid):
    """B[h, i, j] = table[(dy, dx)] looked up one pair at a time."""
    (gh, gw), (wh, ww) = grid, rpb.window_size
    coords = [(i, j) for i in range(gh) for j in range(gw)]
    bias = torch.empty(rpb.table.shape[1], len(coords), len(coords))
    for a, (ya, xa) in enumerate(coords):
        for b, (yb, xb) in enumerate(coords):
            row = (ya - yb + wh - 1) * (2 * ww - 1) + (xa - xb + ww - 1)
            bias[:, a, b] = rpb.table[row]
    return bias


@pytest.mark.parametrize("grid", [(3, 4), (2, 3)])
def test_tmsa_equals_explicit_equations(grid):
    module = _tmsa()
    x_s = torch.randn(2, grid[0] * grid[1], 16)
    x_t = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x_s, x_t, grid), _explicit_tmsa(module, x_s, x_t, grid),
                                   atol=1e-5, rtol=1e-5)



def _grads(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("backend", ["sdpa", "explicit", "cpu_flash"])
@pytest.mark.parametrize("grid", [(3, 4), (2, 3)])
def test_tmsa_backends_train_like_explicit_equations(backend, grid, monkeypatch):
    """Forward and every parameter gradient (the bias table's included) of each attention backend match Eq. 3-6
    written out, in fp32 and, looser, under bf16 autocast."""
    monkeypatch.setattr(layers, "biased_attention_backend", backend)
    module = _tmsa()
    x_s, x_t = torch.randn(2, grid[0] * grid[1], 16), torch.randn(2, 8)
    upstream = torch.randn(2, grid[0] * grid[1], 16)
    expected = _explicit_tmsa(module, x_s, x_t, grid)
    expected_grads = _grads(module, (expected * upstream).sum())
    out = module(x_s, x_t, grid)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = _grads(module, (out * upstream).sum())
    for name, g in expected_grads.items():
        torch.testing.assert_close(grads[name], g, atol=1e-4, rtol=1e-4, msg=name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = module(x_s, x_t, grid)
    assert out_bf16.dtype == torch.bfloat16
    grads_bf16 = _grads(module, (out_bf16.float() * upstream).sum())
    torch.testing.assert_close(out_bf16.float(), expected, atol=0.1, rtol=0.05)
    for name, g in expected_grads.items():
        scale = g.abs().max()
        assert (grads_bf16[name] - g).abs().max() <= 0.05 * scale + 1e-3, name


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_and_sdpa_attention_agree_in_a_training_step(precision, monkeypatch):
    """The fast CPU training path against SDPA: a windowed DiffiT U-Net and a global-window latent DiffiT give the
    same loss and gradients with either backend."""
    torch.manual_seed(0)
    models = [
        DiffiTModel(sample_size=8, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=8,
                    num_classes=4),
        DiffiTUNetModel(sample_size=8, in_channels=1, block_out_channels=(16, 32), layers_per_block=(1, 1),
                        window_size=2, attention_head_dim=8, norm_num_groups=8),
    ]
    for model in models:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(std=0.2)
        c = model.config
        x, t = torch.randn(2, c.in_channels, 8, 8), torch.tensor([3, 700])
        y = torch.tensor([1, 4]) if c.num_classes else None
        results = {}
        for backend in ("sdpa", "explicit", "cpu_flash"):
            monkeypatch.setattr(layers, "biased_attention_backend", backend)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.eval()(x, t, y).sample.float().square().mean()
            results[backend] = (loss.detach(), _grads(model, loss))
        loss_a, grads_a = results.pop("sdpa")
        tol = dict(atol=1e-5, rtol=1e-4) if precision == "fp32" else dict(atol=2e-2, rtol=2e-2)
        for backend, (loss_b, grads_b) in results.items():
            torch.testing.assert_close(loss_b, loss_a, **tol)
            for name, g in grads_a.items():
                if precision == "fp32":
                    torch.testing.assert_close(grads_b[name], g, atol=1e-5, rtol=1e-4, msg=f"{backend} {name}")
                else:
                    assert (grads_b[name] - g).abs().max() <= 0.05 * g.abs().max() + 1e-3, f"{backend} {name}"


def test_cpu_flash_backward_in_blocks_equals_the_formula(monkeypatch):
    """CPUFlashBiasedAttention against the explicit formula's autograd, for a bias shared by the batch and one per
    sample, with the backward split into one-sample blocks and into a single block."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(5, 3, 7, 8, dtype=torch.float64).float().requires_grad_() for _ in range(3))
    for bias_batch in (1, 5):
        bias = torch.randn(bias_batch, 3, 7, 7, requires_grad=True)
        upstream = torch.randn(5, 3, 7, 8)
        expected = layers.explicit_attention(q, k, v, bias)
        want = torch.autograd.grad((expected * upstream).sum(), (q, k, v, bias))
        for block in (1, 1 << 20):
            monkeypatch.setattr(layers, "CPU_FLASH_BACKWARD_BLOCK", block)
            out = layers.CPUFlashBiasedAttention.apply(q, k, v, bias)
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
            got = torch.autograd.grad((out * upstream).sum(), (q, k, v, bias))
            for name, a, b in zip("qkvb", got, want):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"{name} block {block}")


def test_auto_backend_picks_cpu_flash_for_fp32_training_and_explicit_for_bf16(monkeypatch):
    q = torch.randn(2, 4, 8, requires_grad=True)
    bias = torch.randn(2, 4, 4, requires_grad=True)
    assert layers.pick_biased_attention(q, bias) == "cpu_flash"
    assert layers.pick_biased_attention(q.bfloat16(), bias.bfloat16()) == "explicit"
    with torch.no_grad():
        assert layers.pick_biased_attention(q, bias) == "sdpa"  # fp32 sampling: CPU flash attention via SDPA
        assert layers.pick_biased_attention(q.bfloat16(), bias.bfloat16()) == "explicit"
    assert layers.pick_biased_attention(q, bias.detach()) == "sdpa"
    assert layers.pick_biased_attention(q.to("meta"), bias.to("meta")) == "sdpa"
    monkeypatch.setattr(layers, "biased_attention_backend", "flash")
    with pytest.raises(ValueError, match="valid choices are auto, sdpa, explicit, cpu_flash, flex"):
        layers.pick_biased_attention(q, bias)


def _tiny_diffit():
    torch.manual_seed(0)
    model = DiffiTModel(sample_size=8, patch_size=2, num_layers=2, num_attention_heads=2, attention_head_dim=16,
                        num_classes=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.2)  # a non-zero output layer and bias table: the bias must matter
    return model


def test_flex_backend_samples_like_explicit_and_refuses_cpu_training(monkeypatch):
    """flex_attention's score_mod adds the same bias: equal outputs without gradients on a CPU; training there is
    refused with the valid choices (torch's CPU flex_attention has no backward)."""
    model = _tiny_diffit().eval()
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([1, 2])
    outs = {}
    for backend in ("explicit", "flex"):
        monkeypatch.setattr(layers, "biased_attention_backend", backend)
        with torch.no_grad():
            outs[backend] = model(x, t, y).sample
    torch.testing.assert_close(outs["flex"], outs["explicit"], atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(layers, "biased_attention_backend", "flex")
    with pytest.raises(NotImplementedError, match="cannot train on a CPU.*valid choices there are auto, sdpa, "
                                                  "explicit, cpu_flash"):
        model.train()(x, t, y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention's backward needs a GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_flex_backend_trains_like_explicit_on_cuda(compiled, monkeypatch):
    """On CUDA (eager, and compiled as in `--compile`): loss and every gradient, the bias table's included."""
    model = _tiny_diffit().cuda().train()
    x, t, y = torch.randn(2, 4, 8, 8).cuda(), torch.tensor([3, 700]).cuda(), torch.tensor([1, 2]).cuda()
    results = {}
    for backend in ("explicit", "flex"):
        monkeypatch.setattr(layers, "biased_attention_backend", backend)
        forward = torch.compile(model) if compiled and backend == "flex" else model
        loss = forward(x, t, y).sample.square().mean()
        results[backend] = (loss.detach(), _grads(model, loss))
    (loss_a, grads_a), (loss_b, grads_b) = results.values()
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-4)
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, atol=1e-4, rtol=1e-3, msg=name)

def test_relative_bias_lookup_matches_direct_table_lookup():
    rpb = RelativePositionBias((3, 4), num_heads=2)
    torch.nn.init.normal_(rpb.table)
    for grid in [(3, 4), (2, 2), (1, 4)]:
        assert torch.equal(rpb(grid), _direct_bias(rpb, grid))
    with pytest.raises(ValueError, match="exceeds the attention window"):
        rpb((4, 4))


def test_qkv_change_exactly_linearly_with_time_token():
    module = _tmsa()
    x_s = torch.randn(1, 12, 16)
    captured = []
    hook = module.to_out.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    x_t0, x_t1 = torch.randn(1, 8), torch.randn(1, 8)
    with torch.no_grad():
        qkv = [module.to_qkv(x_s) + module.to_qkv_time(x_t)[:, None] for x_t in (x_t0, x_t1)]
        # the time path is affine in x_t, identical for every token, and independent of x_s
        delta = qkv[1] - qkv[0]
        expected = (x_t1 - x_t0) @ module.to_qkv_time.weight.T
        torch.testing.assert_close(delta, expected[:, None].expand_as(delta), atol=1e-5, rtol=1e-5)
        mid = module.to_qkv(x_s) + module.to_qkv_time(0.5 * (x_t0 + x_t1))[:, None]
        torch.testing.assert_close(mid, 0.5 * (qkv[0] + qkv[1]), atol=1e-5, rtol=1e-5)
        module(x_s, x_t0, (3, 4))
    hook.remove()
    assert captured  # the module ran through its output projection


def test_attention_probabilities_change_with_timestep():
    model = DiffiTModel(sample_size=8, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=8,
                        num_classes=0)
    with torch.no_grad():  # weights of a trained size, not the small init
        for p in model.parameters():
            p.normal_(std=0.2)
    attn = model.transformer_blocks[0].attn
    probs = []

    def capture(module, args):
        x, time_token, grid = args
        q, k, _ = (module.to_qkv(x) + module.to_qkv_time(time_token)[:, None]).chunk(3, dim=-1)
        d = q.shape[-1] // module.num_heads
        q = q.view(*q.shape[:2], module.num_heads, d).transpose(1, 2)
        k = k.view(*k.shape[:2], module.num_heads, d).transpose(1, 2)
        probs.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + module.rel_pos_bias(grid), dim=-1))

    attn.register_forward_pre_hook(capture)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        model(x, torch.tensor([5]))
        model(x, torch.tensor([950]))
    assert (probs[0] - probs[1]).abs().max() > 1e-3


def test_pool_mixer_is_time_dependent():
    mixer = PoolMixer(8, time_dim=4)
    x = torch.randn(2, 12, 8)
    a = mixer(x, torch.randn(2, 4), (3, 4))
    b = mixer(x, torch.randn(2, 4), (3, 4))
    assert not torch.allclose(a, b)
    # without time, it is exactly PoolFormer's AvgPool3x3(x) - x
    img = x.transpose(1, 2).reshape(2, 8, 3, 4)
    pool = torch.nn.functional.avg_pool2d(img, 3, 1, 1, count_include_pad=False).flatten(2).transpose(1, 2)
    zero_t = torch.zeros(2, 4)
    torch.testing.assert_close(mixer(x, zero_t, (3, 4)), pool - x + mixer.time_proj.bias)


@pytest.mark.parametrize("grid,window", [((4, 6), (2, 3)), ((8, 8), (4, 4)), ((4, 4), (4, 4))])
def test_window_partition_merge_round_trip(grid, window):
    x = torch.randn(2, grid[0] * grid[1], 5)
    windows = window_partition(x, grid, window)
    assert windows.shape == (2 * (grid[0] // window[0]) * (grid[1] // window[1]), window[0] * window[1], 5)
    assert torch.equal(window_merge(windows, grid, window), x)
    # the first window holds the top-left wh x ww tokens
    img = x.view(2, grid[0], grid[1], 5)
    assert torch.equal(windows[0], img[0, : window[0], : window[1]].reshape(-1, 5))


def test_window_partition_rejects_non_divisible_grid():
    with pytest.raises(ValueError, match="not divisible"):
        window_partition(torch.randn(1, 30, 4), (5, 6), (2, 3))


def test_diffit_xl2_size_and_cost():
    with torch.device("meta"):
        model = create_model("DiffiT-XL/2")
    assert model.config.num_layers == 28 and model.config.num_attention_heads * model.config.attention_head_dim == 1152
    assert abs(count_parameters(model) - 561_035_232) <= 561_035_232 * 1e-3
    # the paper's 114 GMACs leave out the attention matmuls; with them it is ~118.5
    gmacs_linear = count_macs("DiffiT-XL/2", include_attention=False) / 1e9
    assert abs(gmacs_linear - 114) / 114 < 0.03
    assert count_macs("DiffiT-XL/2") / 1e9 > gmacs_linear + 4


def test_diffip_cuts_unet_macs_at_equal_channels():
    full, light = count_macs("DiffiT-CIFAR10"), count_macs("DiffiP-CIFAR10")
    assert create_model("DiffiP-CIFAR10").config.block_out_channels == (128, 256, 256)
    assert full / light > 2.0


def test_unet_presets_and_config_errors():
    with torch.device("meta"):
        cifar = create_model("DiffiT-CIFAR10")
        ffhq = create_model("DiffiT-FFHQ64", in_channels=1)
    assert cifar.config.window_size == 4 and list(cifar.config.layers_per_block) == [2, 2, 2]
    assert ffhq.config.window_size == 8 and list(ffhq.config.layers_per_block) == [1, 2, 2, 2]
    assert ffhq.conv_in.in_channels == 1
    with pytest.raises(ValueError, match="divisible"):
        DiffiTUNetModel(sample_size=20, block_out_channels=(32, 64), layers_per_block=(1, 1), norm_num_groups=8,
                        attention_head_dim=16)
    with pytest.raises(ValueError, match="standard, depthwise_separable"):
        DiffiTUNetModel(block_out_channels=(64,), layers_per_block=(1,), conv="separable")
    with pytest.raises(ValueError, match="attention, pool"):
        DiffiTModel(num_layers=1, num_attention_heads=2, attention_head_dim=8, token_mixer="mlp")
    with pytest.raises(ValueError, match="equal length"):
        DiffiTUNetModel(block_out_channels=(64, 64), layers_per_block=(1,))


def test_global_window_model_rejects_larger_inputs():
    model = DiffiTModel(sample_size=8, patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=8)
    with pytest.raises(ValueError, match="exceeds the attention window"):
        model(torch.randn(1, 4, 8, 10), 1, torch.tensor([1]))


#################################################################################
#            What TMSA's time token can and cannot do (docs/diffit_vs_dit.md)    #
#################################################################################


def _trained_like(model):
    with torch.no_grad():  # weights of a trained size, not the small init (zeroed output layers included)
        for p in model.parameters():
            p.normal_(std=0.2)
    return model


def test_time_part_of_the_key_cannot_change_tmsa():
    """softmax_j((q_i + q_t)(k_j + k_t)^T + B_ij): the terms constant over j cancel, so W_kt, b_kt and the spatial
    key bias b_ks neither change the output nor get a gradient; W_qt and W_vt do both."""
    torch.manual_seed(0)
    module, dim = _tmsa(), 16
    x_s, x_t = torch.randn(2, 12, dim), torch.randn(2, 8)
    key = slice(dim, 2 * dim)
    out = module(x_s, x_t, (3, 4))
    with torch.no_grad():
        changed = []
        for name, rows in [("W_kt", (module.to_qkv_time.weight, key)), ("b_kt", (module.to_qkv_time.bias, key)),
                           ("b_ks", (module.to_qkv.bias, key)), ("W_qt", (module.to_qkv_time.weight, slice(0, dim))),
                           ("W_vt", (module.to_qkv_time.weight, slice(2 * dim, 3 * dim)))]:
            param, sl = rows
            saved = param[sl].clone()
            param[sl] += torch.randn_like(saved)
            changed.append((name, (module(x_s, x_t, (3, 4)) - out).abs().max().item()))
            param[sl] = saved
    moved = dict(changed)
    assert moved["W_kt"] < 1e-5 and moved["b_kt"] < 1e-5 and moved["b_ks"] < 1e-5, moved
    assert moved["W_qt"] > 1e-2 and moved["W_vt"] > 1e-2, moved

    module(x_s, x_t, (3, 4)).square().sum().backward()
    grad_w, grad_b = module.to_qkv_time.weight.grad, module.to_qkv_time.bias.grad
    scale = grad_w.abs().max()
    assert grad_w[key].abs().max() < 1e-5 * scale and grad_b[key].abs().max() < 1e-5 * scale
    assert module.to_qkv.bias.grad[key].abs().max() < 1e-5 * scale
    assert grad_w[:dim].abs().max() > 1e-3 * scale and grad_w[2 * dim:].abs().max() > 1e-3 * scale


def test_time_token_shifts_every_query_of_a_sample_alike():
    """The time token's effect on the attention logits of query i is q_t . k_j: the same re-weighting of the keys
    for every query (and every spatial input), not a per-token modulation."""
    torch.manual_seed(0)
    module, dim, heads = _tmsa(), 16, 2
    x_s, x_t0, x_t1 = torch.randn(1, 12, dim), torch.randn(1, 8), torch.randn(1, 8)

    def logits(x_t):
        q, k, _ = (module.to_qkv(x_s) + module.to_qkv_time(x_t)[:, None]).chunk(3, dim=-1)
        q, k = (m.view(1, 12, heads, dim // heads).transpose(1, 2) for m in (q, k))
        scores = q @ k.transpose(-1, -2)  # (1, H, Tq, Tk)
        return scores - scores.mean(-1, keepdim=True)  # what softmax sees (constant-over-j terms removed)

    with torch.no_grad():
        delta = logits(x_t1) - logits(x_t0)  # (1, H, Tq, Tk)
    torch.testing.assert_close(delta, delta[:, :, :1].expand_as(delta), atol=1e-5, rtol=1e-5)  # same for every query
    assert delta.abs().max() > 1e-2


@pytest.mark.parametrize("flags", [{"adaln_zero": True}, {"final_layer_type": "adaln"},
                                   {"final_layer_type": "layernorm"}, {"zero_init_residual": True}])
def test_opt_in_conditioning_flags(flags):
    """Off by default (the published DiffiT); each flag changes the parameters or the init it says, blocks start as
    the identity where promised, and the conditioned parts really depend on the time token."""
    kwargs = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                  attention_head_dim=8, num_classes=3)
    torch.manual_seed(0)
    base, model = DiffiTModel(**kwargs), DiffiTModel(**kwargs, **flags)
    extra = set(model.state_dict()) - set(base.state_dict())
    if flags.get("adaln_zero"):
        assert extra == {f"transformer_blocks.{i}.adaln_linear.{p}" for i in range(2) for p in ("weight", "bias")}
    elif flags.get("final_layer_type") == "adaln":
        assert extra == {"final_layer.adaln_linear.weight", "final_layer.adaln_linear.bias"}
    elif flags.get("final_layer_type") == "layernorm":
        assert extra == {"final_layer.norm.weight", "final_layer.norm.bias"}
    else:
        assert not extra
    assert not base.config.adaln_zero and not base.config.zero_init_residual
    assert base.config.final_layer_type == "layernorm_silu"

    # identity at init: a block's output equals its input (adaLN-Zero gates / zeroed projections)
    x, t = torch.randn(2, 16, 16), torch.randn(2, 16)
    block = model.transformer_blocks[0]
    identity = torch.allclose(block(x, t, (4, 4)), x)
    assert identity == ("final_layer_type" not in flags)
    assert not torch.allclose(base.transformer_blocks[0](x, t, (4, 4)), x)

    # conditioned: with trained-size weights the output depends on the time token through the added path
    _trained_like(model)
    with torch.no_grad():
        if flags.get("adaln_zero"):
            block.attn.to_qkv_time.weight.zero_(); block.attn.to_qkv_time.bias.zero_()  # noqa: E702
            assert not torch.allclose(block(x, t, (4, 4)), block(x, torch.randn(2, 16), (4, 4)))
        if flags.get("final_layer_type") == "adaln":
            a = model.final_layer(x, torch.nn.functional.silu(t))
            assert not torch.allclose(a, model.final_layer(x, torch.nn.functional.silu(torch.randn(2, 16))))
    latents = torch.randn(2, 4, 8, 8)
    out = model(latents, torch.tensor([1, 900]), torch.tensor([0, 2])).sample
    assert out.shape == (2, 8, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="valid choices are adaln, layernorm, layernorm_silu"):
        DiffiTModel(**kwargs, final_layer_type="silu")


def test_adaln_single_is_adaln_zero_with_one_shared_regression():
    """adaLN-single (opt-in): one shared Linear, a (6D,) table per block. It is exactly an adaLN-Zero model whose
    blocks share their Linear's weight (bias = shared bias + the block's table), starts as the identity, and needs
    adaln_zero."""
    kwargs = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, num_attention_heads=2,
                  attention_head_dim=8, num_classes=3, adaln_zero=True, final_layer_type="adaln")
    torch.manual_seed(0)
    single, zero = DiffiTModel(**kwargs, adaln_single=True), DiffiTModel(**kwargs)
    extra = set(single.state_dict()) - set(zero.state_dict())
    assert extra == {"adaln_shared.weight", "adaln_shared.bias"} | {f"transformer_blocks.{i}.adaln_table"
                                                                    for i in range(3)}
    assert not any("adaln_linear" in k for k in single.state_dict() if k.startswith("transformer_blocks"))
    assert count_parameters(single) < count_parameters(zero)

    latents, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 900]), torch.tensor([0, 2])
    with torch.no_grad():  # zero-initialised: every block starts as the identity
        x = torch.randn(2, 16, 16)
        shared = single.adaln_shared(torch.randn(2, 16))
        assert torch.equal(single.transformer_blocks[0](x, torch.randn(2, 16), (4, 4), shared), x)

    _trained_like(single)
    state = {k: v for k, v in single.state_dict().items() if k in zero.state_dict()}
    for i in range(3):
        state[f"transformer_blocks.{i}.adaln_linear.weight"] = single.adaln_shared.weight
        state[f"transformer_blocks.{i}.adaln_linear.bias"] = single.adaln_shared.bias + single.transformer_blocks[
            i].adaln_table
    zero.load_state_dict(state)
    single.eval(), zero.eval()
    with torch.no_grad():
        expected = zero(latents, t, y).sample
        torch.testing.assert_close(single(latents, t, y).sample, expected)
        single.transformer_blocks[1].adaln_table.add_(0.5)  # each block's table is its own
        assert not torch.allclose(single(latents, t, y).sample, expected)

    with pytest.raises(ValueError, match="needs adaln_zero=True"):
        DiffiTModel(**{**kwargs, "adaln_zero": False}, adaln_single=True)
    with pytest.raises(ValueError, match="shared `modulation`"):
        single.transformer_blocks[0](x, torch.randn(2, 16), (4, 4))


def test_adaln_label_table_adds_a_per_block_row_of_each_samples_label():
    """The per-block label table (opt-in, with adaLN-single) starts at zero (the model is adaLN-single's), adds the
    row of each sample's own label (after the CFG dropout: a dropped label reads the null row) to that block's
    modulations only, and needs adaln_single and labels."""
    kwargs = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=3, num_attention_heads=2,
                  attention_head_dim=8, num_classes=3, adaln_zero=True, adaln_single=True, final_layer_type="adaln")
    torch.manual_seed(0)
    table, single = DiffiTModel(**kwargs, adaln_label_table=True), DiffiTModel(**kwargs)
    extra = set(table.state_dict()) - set(single.state_dict())
    assert extra == {f"transformer_blocks.{i}.adaln_label_table.weight" for i in range(3)}
    assert table.transformer_blocks[0].adaln_label_table.weight.shape == (4, 6 * 16)  # 3 labels + null
    assert all(not b.adaln_label_table.weight.any() for b in table.transformer_blocks)

    _trained_like(single)
    table.load_state_dict(single.state_dict(), strict=False)  # zero tables: the adaLN-single model exactly
    single.eval(), table.eval()
    latents, t, y = torch.randn(3, 4, 8, 8), torch.tensor([1, 500, 900]), torch.tensor([0, 2, 3])
    with torch.no_grad():
        base = single(latents, t, y).sample
        torch.testing.assert_close(table(latents, t, y).sample, base)
        table.transformer_blocks[1].adaln_label_table.weight[2].normal_()  # label 2's row, one block
        out = table(latents, t, y).sample
        torch.testing.assert_close(out[[0, 2]], base[[0, 2]])  # labels 0 and null: unchanged
        assert not torch.allclose(out[1], base[1])  # label 2: moved
        table.transformer_blocks[1].adaln_label_table.weight[2].zero_()

        table.transformer_blocks[2].adaln_label_table.weight[0].normal_()  # label 0's row and the null row
        table.transformer_blocks[2].adaln_label_table.weight[3].normal_()
        zeros, nulls = torch.zeros(3, dtype=torch.long), torch.full((3,), 3)
        null_out = table(latents, t, nulls).sample
        assert not torch.allclose(table(latents, t, zeros).sample, null_out)
        table.train()  # every label dropped to the null label: the blocks read the null row, not label 0's
        table.cond_embed.class_dropout_prob = 1.0
        torch.testing.assert_close(table(latents, t, zeros).sample, null_out)

    with pytest.raises(ValueError, match="needs adaln_single=True and num_classes > 0"):
        DiffiTModel(**{**kwargs, "adaln_single": False}, adaln_label_table=True)
    with pytest.raises(ValueError, match="needs adaln_single=True and num_classes > 0"):
        DiffiTModel(**{**kwargs, "num_classes": 0}, adaln_label_table=True)
    with pytest.raises(ValueError, match="class `labels`"):
        table.transformer_blocks[0](torch.randn(2, 16, 16), torch.randn(2, 16), (4, 4), torch.randn(2, 96))


def test_class_embed_std_sets_only_the_label_tables_init():
    kwargs = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                  attention_head_dim=8, num_classes=10)
    torch.manual_seed(0)
    base = DiffiTModel(**kwargs)
    torch.manual_seed(0)
    strong = DiffiTModel(**kwargs, class_embed_std=0.2)
    table = "cond_embed.class_embedder.weight"
    assert base.state_dict()[table].std().item() == pytest.approx(0.02, rel=0.15)
    assert strong.state_dict()[table].std().item() == pytest.approx(0.2, rel=0.15)
    assert set(base.state_dict()) == set(strong.state_dict())  # the same parameters: init only
    assert base.config.class_embed_std == 0.02
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="class_embed_std must be a positive finite number"):
            DiffiTModel(**kwargs, class_embed_std=bad)


def test_relative_bias_is_cached_for_sampling_and_follows_the_table():
    rpb = RelativePositionBias((3, 4), num_heads=2)
    torch.nn.init.normal_(rpb.table)
    with torch.no_grad():
        first = rpb((3, 4))
        assert rpb((3, 4)) is first  # no gather per sampling step
        assert torch.equal(first, _direct_bias(rpb, (3, 4)))
        assert torch.equal(rpb((2, 2)), _direct_bias(rpb, (2, 2)))  # another grid: recomputed
        rpb.table.add_(1.0)  # an optimiser step
        assert torch.equal(rpb((3, 4)), _direct_bias(rpb, (3, 4)))
    rpb.load_state_dict({"table": torch.zeros_like(rpb.table)})
    with torch.no_grad():
        assert torch.equal(rpb((3, 4)), torch.zeros(2, 12, 12))
    bias = rpb((3, 4))  # with autograd: a fresh gather that carries the gradient to the table
    assert bias.requires_grad
    bias.sum().backward()
    assert rpb.table.grad.abs().sum() > 0
