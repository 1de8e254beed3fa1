"""benchmarks/gpu_smoke.sh in its tiny CPU mode, so that the GPU script is known to run the day a GPU is there."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ..conftest import ROOT, load_script

gpu_smoke = load_script("benchmarks/gpu_smoke.py")


def test_the_whole_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_smoke.sh")], check=True)


def test_tiny_mode_runs_fsdp_and_the_memory_table(tmp_path):
    # GPU_SMOKE_QUICK: the FSDP2 run of check 1 and the memory table (5), one process as on a one-GPU machine. The
    # DDP, resume and bf16 runs use the same launch functions with other flags; DDP = FSDP2 and exact FSDP2 resume
    # with two processes: tests/scripts/test_distributed.py. The full tiny mode takes ~6 min here (see
    # docs/distributed.md).
    env = dict(os.environ, PYTHON=sys.executable, GPU_SMOKE_OUT=str(tmp_path / "out"), GPU_SMOKE_QUICK="1",
               GPU_SMOKE_NPROC="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_smoke.sh"), "--tiny"], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, proc.stdout.decode()[-4000:]
    records = json.loads((tmp_path / "out" / "gpu_smoke.json").read_text())["records"]
    checks = {r["name"]: r for r in records if r["kind"] == "check"}
    assert checks["fsdp"]["ok"] and "8 steps, final loss" in checks["fsdp"]["detail"]
    memory = [(r["model"], r["gradient_checkpointing"]) for r in records if r["kind"] == "memory"]
    assert memory == [("DiT-XL/2", False), ("DiT-XL/2", True), ("DiffiT-XL/2", False), ("DiffiT-XL/2", True)]
    assert "| fsdp | ok |" in (tmp_path / "out" / "gpu_smoke.md").read_text()
    assert "1 process(es)" in (tmp_path / "out" / "fsdp.log").read_text()


def test_compare_fails_on_different_weights(tmp_path):
    for run, value in (("a", 0.0), ("b", 1e-3)):
        for part in gpu_smoke.PARTS:
            (tmp_path / run / part).mkdir(parents=True)
            save_file({"w": torch.full((2,), value)},
                      str(tmp_path / run / part / "diffusion_pytorch_model.safetensors"))
    assert gpu_smoke.compare(tmp_path / "a", tmp_path / "a") == 0.0
    assert gpu_smoke.compare(tmp_path / "a", tmp_path / "b") == pytest.approx(1e-3)
    sys_argv = ["gpu_smoke.py", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--atol", "1e-4", "--name", "x",
                "--log", str(tmp_path / "log.jsonl")]
    with pytest.MonkeyPatch.context() as m:
        m.setattr(sys, "argv", sys_argv)
        with pytest.raises(SystemExit, match="max weight difference 0.001 > 0.0001"):
            gpu_smoke.main()
    assert json.loads((tmp_path / "log.jsonl").read_text())["ok"] is False
