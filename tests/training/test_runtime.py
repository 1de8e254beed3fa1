"""diffit_hf.training.runtime: `mixed_precision="auto"` resolves to what the machine has, in the training configs."""

import json
from types import SimpleNamespace

import pytest

from diffit_hf.training import runtime
from diffit_hf.training.config import parse_config
from diffit_hf.training.vae import VAETrainConfig


@pytest.mark.parametrize("hardware, expected", [(True, "bf16"), (False, "no")])
def test_auto_is_bf16_only_with_bf16_matmul_hardware(monkeypatch, hardware, expected):
    monkeypatch.setattr(runtime, "bf16_matmul_hardware", lambda: hardware)
    assert runtime.resolve_mixed_precision("auto") == expected
    for explicit in ("no", "bf16", "fp16"):  # an explicit choice is never changed
        assert runtime.resolve_mixed_precision(explicit) == explicit
    cfg = parse_config(VAETrainConfig, ["--mixed-precision", "auto"])
    assert cfg.mixed_precision == expected  # resolved when the config is made, so train_config.json saves it


def test_unknown_precision_names_the_choices():
    with pytest.raises(ValueError, match="valid choices are auto, no, bf16, fp16"):
        runtime.resolve_mixed_precision("fp8")


@pytest.mark.parametrize("flags, expected", [("flags : fpu avx512f avx512_bf16 avx512vl", True),
                                             ("flags : fpu amx_tile amx_bf16 avx512f", True),
                                             ("flags : fpu avx512f avx512vl avx512_vnni", False)])
def test_cpu_bf16_hardware_is_read_from_the_cpu_flags(monkeypatch, tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor : 0\n{flags}\n")
    real_path = runtime.Path
    monkeypatch.setattr(runtime, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: False)
    assert runtime.bf16_matmul_hardware() is expected


def test_a_gpu_counts_unless_accelerate_is_told_to_use_the_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    assert runtime.bf16_matmul_hardware() is True
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # the run is on the CPU: its flags decide
    real_path = runtime.Path
    monkeypatch.setattr(runtime, "Path", lambda p: real_path(tmp_path / "absent"))  # no /proc/cpuinfo to read
    assert runtime.bf16_matmul_hardware() is False


def _lrs(name: str, warmup: int, total: int, decay: int = 0, processes: int = 1) -> list[float]:
    """The lr of each optimizer step (accelerate steps a prepared scheduler once per process and optimizer step)."""
    from types import SimpleNamespace

    import torch

    from diffit_hf.training.runtime import lr_schedule

    accelerator = SimpleNamespace(num_processes=processes)  # all lr_schedule reads of it
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(accelerator, name, optimizer, warmup, total, decay)
    out = []
    for _ in range(total):
        out.append(schedule.get_last_lr()[0])
        optimizer.step()
        for _ in range(processes):
            schedule.step()
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_wsd_warms_up_holds_then_decays_linearly_to_zero(processes):
    lrs = _lrs("wsd", warmup=4, total=20, decay=8, processes=processes)
    assert lrs[:4] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert lrs[4:12] == [1.0] * 8  # stable until the last 8 steps
    assert lrs[12:] == pytest.approx([1 - k / 8 for k in range(8)])  # then linearly towards zero
    assert lrs == pytest.approx(_lrs("constant_with_warmup", 4, 20, 0)[:12] + lrs[12:])


def test_bad_lr_schedules_name_the_problem():
    from diffit_hf.training.runtime import check_lr_schedule

    with pytest.raises(ValueError, match="lr_decay_steps <= max_steps - lr_warmup_steps \\(16\\), got 17"):
        check_lr_schedule("wsd", 4, 20, 17)
    with pytest.raises(ValueError, match="got 0"):
        check_lr_schedule("wsd", 4, 20, 0)
    with pytest.raises(ValueError, match="wsd schedule only, not 'cosine'"):
        check_lr_schedule("cosine", 4, 20, 5)
    with pytest.raises(ValueError, match="Unknown lr schedule 'wsdd'; choose one of .*wsd"):
        check_lr_schedule("wsdd", 4, 20, 5)


def _saved(tmp_path, **schedule):
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 4, "lr_decay_steps": 0,
                                "max_steps": 20, "learning_rate": 1e-3, **schedule}))
    return path


def _now(**schedule):
    return SimpleNamespace(**{"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 4, "lr_decay_steps": 0,
                              "max_steps": 20, **schedule})


def test_a_schedule_may_change_on_resume_only_where_it_continues_the_run(tmp_path):
    from diffit_hf.training.runtime import check_lr_resume

    constant = _saved(tmp_path)
    # a wsd decay branched at (or after) the resumed step, a longer constant run: the steps taken keep their lr
    check_lr_resume(constant, _now(lr_scheduler="wsd", max_steps=40, lr_decay_steps=20), step=20)
    check_lr_resume(constant, _now(lr_scheduler="wsd", max_steps=40, lr_decay_steps=8), step=20)
    check_lr_resume(constant, _now(max_steps=40), step=20)
    check_lr_resume(constant, _now(lr_warmup_steps=8), step=0)  # nothing taken yet
    # a decay that would have started before the resumed step, another warmup: refused, naming the first step
    with pytest.raises(ValueError, match=r"at step 20 .*lr_decay_steps 0 -> 24, max_steps 20 -> 40.*step 17: 1 x the "
                                         r"lr before, 0\.9583 x now"):
        check_lr_resume(constant, _now(lr_scheduler="wsd", max_steps=40, lr_decay_steps=24), step=20)
    with pytest.raises(ValueError, match=r"lr_warmup_steps 4 -> 8\).*step 1: 0\.25 x the lr before, 0\.125 x now"):
        check_lr_resume(constant, _now(lr_warmup_steps=8), step=20)
    # a cosine run made longer on resume would jump: every step after the warmup had another lr
    cosine = _saved(tmp_path, lr_scheduler="cosine")
    with pytest.raises(ValueError, match=r"max_steps 20 -> 40.*step 5:"):
        check_lr_resume(cosine, _now(lr_scheduler="cosine", max_steps=40), step=10)
    check_lr_resume(cosine, _now(lr_scheduler="cosine"), step=10)  # unchanged
    check_lr_resume(tmp_path / "absent.json", _now(lr_scheduler="cosine", max_steps=40), step=10)  # nothing saved


def test_lr_factors_are_the_schedule_the_run_steps_through():
    from diffit_hf.training.runtime import lr_factors

    assert lr_factors("wsd", 4, 20, 8, 20) == pytest.approx(_lrs("wsd", warmup=4, total=20, decay=8))
    assert lr_factors("cosine", 4, 20, 0, 20) == pytest.approx(_lrs("cosine", 4, 20, 0))


def test_adamw_is_fused_on_cpu_and_steps_like_torchs_default():
    """The fused kernel where every parameter is a plain CPU/CUDA tensor (one kernel instead of a loop over the
    parameters), the default implementation elsewhere; the update is AdamW's with the given lr, decay and betas."""
    import torch

    torch.manual_seed(0)
    weights = [torch.randn(5, 3), torch.randn(7)]
    ours = [torch.nn.Parameter(w.clone()) for w in weights]
    ref = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = runtime.adamw(ours, 1e-2, weight_decay=0.1, betas=(0.8, 0.95))
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, weight_decay=0.1, betas=(0.8, 0.95), foreach=False)
    assert opt.defaults["fused"] is True and opt.defaults["betas"] == (0.8, 0.95)
    for step in range(3):
        for params, o in ((ours, opt), (ref, ref_opt)):
            for p in params:
                p.grad = torch.full_like(p, 0.5 + step) * torch.arange(p.numel()).view_as(p)
            o.step()
    for a, b, w in zip(ours, ref, weights):
        assert not torch.equal(a, w)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    meta = runtime.adamw([torch.nn.Parameter(torch.empty(3, device="meta"))], 1e-3)
    assert not meta.defaults["fused"]  # no fused kernel there: torch's default
