"""Fully sharded training (PyTorch FSDP2 through accelerate) next to data-parallel (DDP) training, one loop for both.

`accelerate launch --use_fsdp --fsdp_version 2 ...` shards every parameter, gradient and optimiser state across the
processes (`torch.distributed.fsdp.fully_shard`), one unit per transformer block (the model's `_no_split_modules`).
The parameters then are `DTensor` shards, and four things need the full tensors, gathered here:

- the EMA. It is kept **sharded**, on every rank next to the parameter shards it averages: diffusers' `EMAModel`
  updates it elementwise (`s -= (1 - decay) * (s - p)`), which DTensors do shard by shard with no communication,
  and an XL model's EMA costs 1/N of a full copy per GPU instead of a full fp32 copy on rank 0 (2.7 GB for
  DiT-XL/2) plus a gather of every parameter at every step. It is gathered only to write or sample it.
- the `save_pretrained` folders in each checkpoint (`transformer/`, `transformer_ema/`, written and read by the
  hooks of `register_checkpoint_hooks`), gathered on every rank and written by the main process, next to
  accelerate's sharded model and optimiser state; resume reads the sharded state for the model and optimiser and
  re-shards the EMA from its full folder.
- validation samples and the exported pipeline (the EMA weights in an ordinary module on the main process).
- the weight digest with which a run checks that its ranks hold the same weights (`weight_digest`).

With DDP (no DTensor anywhere) every gathering function here is a no-op pass-through and the hooks save and load the
modules as they are, so the training scripts have one path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

FSDP_SHARDING = {"FULL_SHARD": True, "SHARD_GRAD_OP": False}  # FSDP1 names -> FSDP2's reshard_after_forward


def fsdp_plugin_from_env():
    """The FSDP plugin for `accelerate launch --use_fsdp` (None otherwise): FSDP2, the block class as wrap unit and
    sharded checkpoints unless the launch says otherwise. Raises `ValueError` for what this training does not
    support (FSDP1, full state dicts), naming the flag to use."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin

    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(f"FSDP version {version} is not supported: pass --fsdp_version 2 to accelerate launch "
                         "(FSDP2, torch.distributed.fsdp.fully_shard; the EMA and checkpoints work on its DTensors).")
    state_dict_type = os.environ.get("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT").upper()
    if state_dict_type != "SHARDED_STATE_DICT":
        raise ValueError(f"--fsdp_state_dict_type {state_dict_type} is not supported: checkpoints hold the sharded "
                         "state (SHARDED_STATE_DICT, the default here) plus full save_pretrained folders of the "
                         "model and its EMA.")
    # FULL_SHARD (reshard after forward, ZeRO-3) or SHARD_GRAD_OP (keep the gathered parameters until backward,
    # ZeRO-2): FSDP2 spells it --fsdp_reshard_after_forward true|false; the FSDP1 names are accepted in either flag
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").upper()
    strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    if strategy not in FSDP_SHARDING:
        raise ValueError(f"--fsdp_sharding_strategy {strategy} is not supported: use FULL_SHARD or SHARD_GRAD_OP "
                         "(FSDP2: --fsdp_reshard_after_forward true or false).")
    if reshard in FSDP_SHARDING:
        reshard_after_forward = FSDP_SHARDING[reshard]
    elif reshard in ("TRUE", "FALSE"):
        reshard_after_forward = reshard == "TRUE" and FSDP_SHARDING.get(strategy, True)
    else:
        raise ValueError(f"--fsdp_reshard_after_forward {reshard!r}: use true (FULL_SHARD) or false (SHARD_GRAD_OP).")
    return FullyShardedDataParallelPlugin(
        fsdp_version=2, reshard_after_forward=reshard_after_forward, state_dict_type="SHARDED_STATE_DICT",
        auto_wrap_policy=os.environ.get("FSDP_AUTO_WRAP_POLICY", "transformer_based_wrap"))  # _no_split_modules


def set_fsdp_wrap_units(accelerator, model: torch.nn.Module) -> list[str]:
    """Under FSDP, shards `model` one block at a time: the classes of its `_no_split_modules` that it contains
    (DiTModel lists both of its block kinds and uses one), unless `--fsdp_transformer_layer_cls_to_wrap` names
    others. Returns the wrapped class names ([] without FSDP)."""
    plugin = getattr(accelerator.state, "fsdp_plugin", None)
    if plugin is None:
        return []
    if plugin.transformer_cls_names_to_wrap is None:
        present = {type(m).__name__ for m in model.modules()}
        plugin.transformer_cls_names_to_wrap = [n for n in getattr(model, "_no_split_modules", []) if n in present]
    return list(plugin.transformer_cls_names_to_wrap)


def allow_fsdp_on_cpu() -> None:
    """Lets accelerate run FSDP2 on CPU processes (gloo), to test the sharded path on machines without GPUs.

    accelerate only turns `--use_fsdp` on for GPU-like devices (`AcceleratorState` keeps `MULTI_CPU` otherwise),
    although `fully_shard` itself runs on CPU with gloo. This marks the state as FSDP when a plugin is given, so
    that accelerate's own FSDP2 `prepare`, `save_state` and `load_state` run unchanged. Used by
    `python -m diffit_hf.training.cpu_fsdp` (tests, `benchmarks/gpu_smoke.sh --tiny`), never on GPUs.
    """
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    init = AcceleratorState.__init__
    if getattr(init, "_allows_cpu_fsdp", False):
        return

    @functools.wraps(init)
    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)  # every call copies PartialState's MULTI_CPU back
        if fsdp_plugin is not None:
            self.fsdp_plugin = fsdp_plugin
        if getattr(self, "fsdp_plugin", None) is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":  # what AcceleratorState does for GPUs: FSDP2's MixedPrecisionPolicy
                self.fsdp_plugin.set_mixed_precision(self._mixed_precision)

    patched._allows_cpu_fsdp = True
    AcceleratorState.__init__ = patched


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model`'s parameters are FSDP2 shards (DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def unsharded_class(model: torch.nn.Module) -> type:
    """The model's own class (`fully_shard` swaps it for a generated `FSDP<Class>` subclass)."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor, detached: gathered from every rank for a DTensor (a collective: call it on every rank)."""
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach()


def weight_digest(model: torch.nn.Module) -> int:
    """A 56-bit digest of the model's weights (to check that data-parallel ranks hold identical weights); FSDP
    shards are gathered first (a collective: call it on every rank)."""
    import hashlib

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(full_tensor(p).float().cpu().numpy().tobytes())
    return int(h.hexdigest()[:14], 16)


def full_state_dict(model: torch.nn.Module, params: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """`model.state_dict()` with whole tensors on CPU, gathered one at a time (a collective for a sharded model);
    `params` (e.g. EMA shadow parameters, in `model.parameters()` order) replace the parameters."""
    names = [name for name, _ in model.named_parameters()]
    replace = dict(zip(names, params)) if params is not None else {}
    return {k: full_tensor(replace.get(k, v)).cpu() for k, v in model.state_dict().items()}


def full_copy(model_cls: type, config, state_dict: dict[str, torch.Tensor], device=None) -> torch.nn.Module:
    """A plain `model_cls` built from `config` holding `state_dict` (no random init: the parameters are created
    empty and assigned, the non-persistent buffers computed as usual)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_cls.from_config(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.to(device).eval() if device is not None else model.eval()


def save_full(model: torch.nn.Module, ema, folder, name: str, is_main_process: bool, model_cls: type) -> None:
    """Writes `<folder>/<name>/` (the model) and `<folder>/<name>_ema/` (its EMA, as `EMAModel.save_pretrained`
    writes it) as `save_pretrained` folders on the main process; with sharded parameters every rank must call it."""
    if not is_sharded(model):  # DDP: the module and the EMA are whole on every rank
        if is_main_process:
            model.save_pretrained(Path(folder) / name)
            if ema is not None:
                ema.save_pretrained(Path(folder) / f"{name}_ema")
        return
    state = full_state_dict(model)
    if is_main_process:
        full_copy(model_cls, model.config, state).save_pretrained(Path(folder) / name)
    del state
    if ema is not None:
        state = full_state_dict(model, ema.shadow_params)
        if is_main_process:
            # the format of EMAModel.save_pretrained (its scalars in config.json) without a second full model
            copy = full_copy(model_cls, model.config, state)
            copy.register_to_config(**{k: v for k, v in ema.state_dict().items() if k != "shadow_params"})
            copy.save_pretrained(Path(folder) / f"{name}_ema")


def load_sharded_ema(ema, folder, model_cls: type) -> None:
    """Reads an `EMAModel.save_pretrained` folder into `ema`, whose shadow parameters are DTensor shards: each rank
    keeps its own shard of the full tensors (every rank reads the folder)."""
    from diffusers.training_utils import EMAModel

    loaded = EMAModel.from_pretrained(str(folder), model_cls).state_dict()
    loaded["shadow_params"] = [
        distribute_tensor(full.to(s.device, s.dtype), s.device_mesh, s.placements) if isinstance(s, DTensor) else
        full.to(s.device, s.dtype) for full, s in zip(loaded["shadow_params"], ema.shadow_params)]
    ema.load_state_dict(loaded)


def check_same_architecture(saved_folder: str | Path, model) -> None:
    """`ValueError` naming the config keys in which the model saved in `saved_folder` differs from `model`."""
    saved = json.loads((Path(saved_folder) / "config.json").read_text())
    ours = json.loads(json.dumps(dict(model.config)))  # tuples -> lists, as saved
    differ = sorted(k for k in set(saved) | set(ours) if not k.startswith("_") and saved.get(k) != ours.get(k))
    if differ:
        pairs = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {ours.get(k)!r}" for k in differ)
        raise ValueError(f"{saved_folder} holds another model ({pairs}). Resume with the run's own --model, "
                         "--model-config and data, or start a new run in another --output-dir.")


def register_checkpoint_hooks(accelerator, model, ema=None, name: str = "transformer") -> tuple[str, ...]:
    """`save_state` writes `model` (the unwrapped `ModelMixin`) as `<name>/` and `ema` (a diffusers `EMAModel`) as
    `<name>_ema/` save_pretrained folders; `load_state` checks that the saved model has `model`'s architecture and
    reads them back into the same objects. Returns the folders a complete checkpoint holds.

    Under FSDP (`model`'s parameters are DTensor shards) accelerate itself writes and reads the sharded model and
    optimiser state; the hooks gather the full folders on the main process and re-shard the
    EMA from its folder on resume. Register them after `accelerator.prepare` (and the EMA built from the prepared
    parameters)."""
    model_cls = unsharded_class(model)

    def save_hook(models, weights, output_dir):
        save_full(model, ema, output_dir, name, accelerator.is_main_process, model_cls)
        weights.clear()  # saved above: accelerate must not write them again (`models` is accelerate's own list)

    def load_hook(models, input_dir):
        models.clear()  # a copy: loaded here, into the module that the prepared (wrapped) model shares
        check_same_architecture(Path(input_dir) / name, model)
        if not is_sharded(model):  # FSDP: accelerate has loaded the sharded state already
            saved = model_cls.from_pretrained(input_dir, subfolder=name)
            model.load_state_dict(saved.state_dict())
        if ema is not None:
            load_sharded_ema(ema, Path(input_dir) / f"{name}_ema", model_cls)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    return (name,) if ema is None else (name, f"{name}_ema")


@contextlib.contextmanager
def ema_weights(model: torch.nn.Module, ema, is_main_process: bool, device=None) -> Iterator[torch.nn.Module | None]:
    """A module holding the EMA weights on the main process (None on the others), for sampling or export.

    DDP: `model` itself with the EMA weights swapped in (and swapped back on exit; the main process alone may enter).
    FSDP: a plain copy built from the gathered EMA (every rank must enter; `model` is untouched).
    """
    if is_sharded(model):
        state = full_state_dict(model, ema.shadow_params)
        copy = full_copy(unsharded_class(model), model.config, state, device) if is_main_process else None
        del state
        yield copy
        return
    if not is_main_process:
        yield None
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    model.eval()
    try:
        yield model
    finally:
        ema.restore(model.parameters())
        model.train()
