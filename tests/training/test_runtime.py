"""diffit_hf.training.runtime: `mixed_precision="auto"` resolves to what the machine has, in the training configs."""

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
