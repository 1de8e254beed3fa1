import pytest
import torch
from diffusers.training_utils import EMAModel

from diffit_hf import DiTModel
from diffit_hf.training.ema import make_ema


def tiny():
    torch.manual_seed(0)
    return DiTModel(sample_size=4, patch_size=2, in_channels=4, num_layers=1, num_attention_heads=2,
                    attention_head_dim=4, num_classes=2)


def steps(model, ema, n):
    """n fake optimiser steps (the weights jump by k at step k); returns the weight history of one tensor."""
    history = [model.patch_embed.proj.weight.detach().clone()]
    for k in range(1, n + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(float(k))
        ema.step(model.parameters())
        history.append(model.patch_embed.proj.weight.detach().clone())
    return history


def ema_weight(ema, model):
    ema.copy_to(model.parameters())
    return model.patch_embed.proj.weight.detach().clone()


def test_no_warmup_is_dits_constant_decay_from_the_first_step():
    decay = 0.9
    model = tiny()
    ema = make_ema(model, decay, warmup=False)
    history = steps(model, ema, 3)
    expected = history[0]  # DiT: the EMA starts as a copy of the initial weights, then decays by 0.9 every step
    for w in history[1:]:
        expected = decay * expected + (1 - decay) * w
    torch.testing.assert_close(ema_weight(ema, model), expected)
    assert [make_ema(model, decay, warmup=False).get_decay(s) for s in (1, 2, 1000)] == [decay] * 3
    # diffusers' use_ema_warmup=False alone is another schedule: (1 + s) / (10 + s), after copying at step 1
    plain = EMAModel(tiny().parameters(), decay=decay, use_ema_warmup=False)
    assert plain.get_decay(1) == 0.0 and plain.get_decay(3) == pytest.approx(3 / 12)


def test_warmup_ramps_the_decay_up():
    ema = make_ema(tiny(), 0.9999, warmup=True, power=2 / 3)
    for step in (2, 10, 1000):
        assert ema.get_decay(step) == pytest.approx(1 - step ** (-2 / 3))  # s = step - 1: 1 - (1 + s) ** -power
    assert ema.get_decay(10**9) == pytest.approx(0.9999)


def test_the_schedule_survives_a_checkpoint():
    model = tiny()
    ema = make_ema(model, 0.99, warmup=False)
    steps(model, ema, 2)
    restored = make_ema(tiny(), 0.99, warmup=True)
    restored.load_state_dict(ema.state_dict())
    assert restored.get_decay(3) == ema.get_decay(3) == 0.99


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        make_ema(tiny(), 1.0)


@pytest.mark.parametrize("warmup", [True, False])
def test_step_weights_are_the_emas_weights_of_each_step(warmup):
    from diffit_hf.training.ema import step_weights

    model = tiny()
    ema = make_ema(model, 0.9, warmup=warmup, power=0.5)
    history = steps(model, ema, 12)
    w = step_weights(12, 0.9, warmup=warmup, power=0.5)
    assert w.shape == (13,) and w.sum() == pytest.approx(1.0) and (w >= 0).all()
    # warmup: step 1's decay is 0, so the initial weights drop out; DiT's constant decay keeps 0.9 ** 12 of them
    assert w[0] == pytest.approx(0.0 if warmup else 0.9**12)
    expected = sum(wi * h.double() for wi, h in zip(w, history))
    torch.testing.assert_close(ema_weight(ema, model).double(), expected, rtol=1e-6, atol=1e-6)


def test_snapshot_weights_interpolate_between_snapshots():
    import numpy as np

    from diffit_hf.training.ema import snapshot_weights, step_weights

    w = step_weights(20, 0.9999, warmup=True, power=0.8)
    kept = [0, 5, 10, 15, 20]
    on_snapshots = snapshot_weights(kept, w)
    assert on_snapshots.sum() == pytest.approx(1.0)
    # weights that move linearly between snapshots (here: over the whole run) are reconstructed exactly
    theta = 3.0 + 0.7 * np.arange(21)
    assert (on_snapshots * theta[kept]).sum() == pytest.approx((w * theta).sum(), rel=1e-12)
    # a curved trajectory is only approximated from every 5th step, exactly from every step
    curved = np.sin(np.arange(21) / 3.0)
    assert (on_snapshots * curved[kept]).sum() != pytest.approx((w * curved).sum(), rel=1e-6)
    assert (snapshot_weights(list(range(21)), w) * curved).sum() == pytest.approx((w * curved).sum(), rel=1e-12)
    for bad in ([5, 10, 20], [0, 10, 15], [0, 10, 10, 20]):  # not from 0, not to the last step, not increasing
        with pytest.raises(ValueError, match="from step 0 to step 20"):
            snapshot_weights(bad, w)


def test_the_foreach_update_is_the_per_parameter_update():
    """make_ema updates all shadow weights with foreach ops; the result is diffusers' per-parameter loop's."""
    model, ref = tiny(), tiny()
    ema = make_ema(model, 0.9, warmup=True)
    loop = make_ema(ref, 0.9, warmup=True)
    loop.foreach = False
    assert ema.foreach
    steps(model, ema, 3), steps(ref, loop, 3)
    for a, b in zip(ema.shadow_params, loop.shadow_params):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(ema.shadow_params[0], tiny().patch_embed.proj.weight)  # it averaged something
