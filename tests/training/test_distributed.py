"""diffit_hf.training.distributed in one process: the FSDP launch settings, the wrap units, and the unsharded (DDP)
paths of the gather helpers. The sharded paths run in tests/scripts/test_distributed.py (two FSDP2 processes)."""

from types import SimpleNamespace

import pytest
import torch
from diffusers.training_utils import EMAModel

from diffit_hf.models.presets import create_model
from diffit_hf.training.distributed import (
    ema_weights,
    fsdp_plugin_from_env,
    full_copy,
    full_state_dict,
    is_sharded,
    save_full,
    set_fsdp_wrap_units,
    unsharded_class,
)

from ..tiny import weights

TINY = dict(num_layers=2, num_attention_heads=2, attention_head_dim=8, sample_size=8, num_classes=3)


@pytest.fixture
def fsdp_env(monkeypatch):
    """The environment `accelerate launch --use_fsdp --fsdp_version 2` gives the script (its defaults)."""
    for key, value in dict(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_SHARDING_STRATEGY="FULL_SHARD",
                           FSDP_RESHARD_AFTER_FORWARD="true").items():
        monkeypatch.setenv(key, value)
    for key in ("FSDP_STATE_DICT_TYPE", "FSDP_AUTO_WRAP_POLICY", "FSDP_TRANSFORMER_CLS_TO_WRAP"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_fsdp_plugin_defaults_and_sharding_strategies(fsdp_env):
    from torch.distributed.fsdp import StateDictType
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    plugin = fsdp_plugin_from_env()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # FULL_SHARD
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy
    fsdp_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert fsdp_plugin_from_env().reshard_after_forward is False  # SHARD_GRAD_OP, FSDP2's spelling
    fsdp_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "true")
    fsdp_env.setenv("FSDP_SHARDING_STRATEGY", "SHARD_GRAD_OP")  # FSDP1's flag, which accelerate ignores for FSDP2
    assert fsdp_plugin_from_env().reshard_after_forward is False
    fsdp_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "SHARD_GRAD_OP")
    assert fsdp_plugin_from_env().reshard_after_forward is False
    fsdp_env.setenv("ACCELERATE_USE_FSDP", "false")
    assert fsdp_plugin_from_env() is None


def test_fsdp_settings_that_cannot_work_are_refused_with_the_fix(fsdp_env):
    fsdp_env.setenv("FSDP_VERSION", "1")  # accelerate launch's default
    with pytest.raises(ValueError, match="pass --fsdp_version 2"):
        fsdp_plugin_from_env()
    fsdp_env.setenv("FSDP_VERSION", "2")
    fsdp_env.setenv("FSDP_STATE_DICT_TYPE", "FULL_STATE_DICT")
    with pytest.raises(ValueError, match="SHARDED_STATE_DICT"):
        fsdp_plugin_from_env()
    fsdp_env.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
    fsdp_env.setenv("FSDP_SHARDING_STRATEGY", "HYBRID_SHARD")
    with pytest.raises(ValueError, match="HYBRID_SHARD is not supported: use FULL_SHARD or SHARD_GRAD_OP"):
        fsdp_plugin_from_env()
    fsdp_env.setenv("FSDP_SHARDING_STRATEGY", "FULL_SHARD")
    fsdp_env.setenv("FSDP_RESHARD_AFTER_FORWARD", "sometimes")
    with pytest.raises(ValueError, match="true .FULL_SHARD. or false .SHARD_GRAD_OP."):
        fsdp_plugin_from_env()


@pytest.mark.parametrize("name, overrides, units", [
    ("DiT-S/2", {}, ["AdaLNBlock"]),
    ("DiT-S/2", {"block_type": "in_context"}, ["ViTBlock"]),
    ("DiffiT-S/2", {}, ["DiffiTBlock"]),
    ("DiffiT-CIFAR10", {"block_out_channels": (16, 32, 32), "sample_size": 16, "layers_per_block": (1, 1, 1),
                        "norm_num_groups": 8, "attention_head_dim": 8},
     ["DiffiTResBlock"]),
])
def test_the_wrap_unit_is_the_block_class_the_model_has(fsdp_env, name, overrides, units):
    tiny = {k: v for k, v in TINY.items() if name.startswith(("DiT", "DiffiT-S"))} | overrides
    model = create_model(name, **tiny)
    accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=fsdp_plugin_from_env()))
    assert set_fsdp_wrap_units(accelerator, model) == units
    assert all(any(type(m).__name__ == u for m in model.modules()) for u in units)
    # the user's --fsdp_transformer_layer_cls_to_wrap wins; no FSDP: nothing to do
    accelerator.state.fsdp_plugin.transformer_cls_names_to_wrap = ["Attention"]
    assert set_fsdp_wrap_units(accelerator, model) == ["Attention"]
    assert set_fsdp_wrap_units(SimpleNamespace(state=SimpleNamespace()), model) == []


def test_unsharded_models_pass_through(tmp_path):
    torch.manual_seed(0)
    model = create_model("DiT-S/2", **TINY)
    ema = EMAModel(model.parameters(), decay=0.5, model_cls=type(model), model_config=model.config)
    ema.step(model.parameters())  # the first step copies (decay 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.step(model.parameters())  # shadow: between before and after
    assert not is_sharded(model) and unsharded_class(model) is type(model)

    # full_copy: the same weights and non-persistent buffers without a random init of its own
    copy = full_copy(type(model), model.config, full_state_dict(model))
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 500]), torch.tensor([0, 2])
    torch.testing.assert_close(copy(x, t, y).sample, model.eval()(x, t, y).sample, rtol=0, atol=0)
    ema_state = full_state_dict(model, ema.shadow_params)
    for (name, p), shadow in zip(model.named_parameters(), ema.shadow_params):
        assert torch.equal(ema_state[name], shadow) and not torch.equal(shadow, p) and not torch.equal(shadow,
                                                                                                   before[name])

    # ema_weights swaps the EMA into the model on the main process and back on exit; others get None
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with ema_weights(model, ema, is_main_process=True) as m:
        assert m is model and all(torch.equal(p, ema_state[k]) for k, p in model.named_parameters())
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    with ema_weights(model, ema, is_main_process=False) as m:
        assert m is None

    # save_full writes what save_pretrained / EMAModel.save_pretrained write
    save_full(model, ema, tmp_path, "transformer", True, type(model))
    assert all(torch.equal(v, trained[k]) for k, v in weights(tmp_path / "transformer").items())
    assert all(torch.equal(v, ema_state[k]) for k, v in weights(tmp_path / "transformer_ema").items())
    loaded = EMAModel.from_pretrained(str(tmp_path / "transformer_ema"), type(model))
    assert loaded.decay == 0.5 and loaded.optimization_step == 2
    assert all(torch.equal(a, b) for a, b in zip(loaded.shadow_params, ema.shadow_params))
