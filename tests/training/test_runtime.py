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
