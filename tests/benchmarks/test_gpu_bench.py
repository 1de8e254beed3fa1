"""benchmarks/gpu_bench.sh at tiny sizes on CPU: it runs end to end, its numbers are self-consistent, and
update_readme renders them; the day a GPU is there the same script measures XL models."""

import json
import os
import subprocess
import sys

import pytest

from diffit_hf import DiTModel, count_macs

from ..conftest import ROOT, load_script


def run_bench(*args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_bench.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_gpu_bench_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_bench("--tiny", "--device", "cpu", "--rows", "dit:eager+gc", "diffusers:eager+gc", "--batches", "2",
                     "--steps", "2", "--sample-batch", "2", "--sample-steps", "2", "--sample-repeats", "1",
                     "--peak-tflops", "0.5", "--profile", "--profile-batch", "2", "--profile-top", "5",
                     "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["tiny"] and payload["bf16_peak_tflops"] == 0.5
    assert [(r["key"], r["mode"], r["batch"]) for r in payload["train"]] == [("dit", "eager+gc", 2),
                                                                          ("diffusers", "eager+gc", 2)]
    macs = count_macs(DiTModel(**load_script("benchmarks/gpu_bench.py").TINY))
    for r in payload["train"]:
        assert r["samples_per_s"] > 0 and r["samples_per_s"] == pytest.approx(2 * r["steps_per_s"])
        assert r["mfu"] == pytest.approx(6 * macs * r["samples_per_s"] / 0.5e12)
    dit, diffusers = payload["train"]
    ratio = dit["samples_per_s"] / diffusers["samples_per_s"]
    assert payload["dit_over_diffusers"] == {"eager+gc": pytest.approx(ratio)}
    assert set(payload["sampling"]["pipelines"]) == {"diffusers DiTPipeline (tiny DiT)", "DiffiTPipeline (tiny DiT)",
                                                     "DiffiTPipeline (tiny DiffiT)"}
    assert all(p["images_per_s"] > 0 for p in payload["sampling"]["pipelines"].values())
    prof = payload["profile"]  # where one train step and one sampling step of each model spend their time
    assert prof["clock"] == "cpu" and set(prof["models"]) == {"tiny dit", "tiny diffit"}
    for phases in prof["models"].values():
        assert set(phases) == {"train step", "sampling step"}
        for p in phases.values():
            shares = [o["share"] for o in p["ops"]]
            assert len(shares) == 5 and p["total_ms"] > 0 and shares == sorted(shares, reverse=True)
            assert 0 < sum(shares) <= 1 + 1e-9
            assert all(o["self_ms"] == pytest.approx(o["share"] * p["total_ms"]) for o in p["ops"])
    table = out.with_suffix(".md").read_text()
    assert "| tiny dit | eager+gc | 2 |" in table and "DiffiTPipeline (tiny DiffiT)" in table
    assert "Profile, tiny diffit, one eager train step (batch 2" in table
    rendered = load_script("benchmarks/update_readme.py").bench_tables()
    assert ROOT / "benchmarks" / "results" / "gpu_bench.md" in rendered


def test_gpu_bench_refuses_bad_rows_before_work(tmp_path):
    proc = run_bench("--tiny", "--device", "cpu", "--rows", "dit:eager", "dit:jit",
                     "--output", str(tmp_path / "g.json"))
    assert proc.returncode != 0
    assert "bad --rows entry 'dit:jit'" in proc.stderr and "eager, eager+gc, compiled, compiled+gc" in proc.stderr
    assert not (tmp_path / "g.json").exists()
    proc = run_bench("--tiny", "--device", "cpu", "--rows", "diffit:compiled+flex", "dit:compiled+flex",
                     "--output", str(tmp_path / "g.json"))
    assert proc.returncode != 0 and "'dit:compiled+flex': +flex changes DiffiT's biased attention" in proc.stderr
    assert not (tmp_path / "g.json").exists()


def test_bf16_peak_table_matches_device_names():
    bench = load_script("benchmarks/gpu_bench.py")
    assert bench.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4)
    assert bench.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.bf16_peak_tflops("NVIDIA H200") == pytest.approx(989.4)
    assert bench.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.bf16_peak_tflops("Some CPU") is None


def test_gpu_bench_records_a_broken_row_and_goes_on(tmp_path):
    """A GPU lease is short: a row that times out (here: 1 s, less than a worker's start) or a spent time budget
    is written down as such, and the run still writes its JSON and table."""
    out = tmp_path / "g.json"
    proc = run_bench("--tiny", "--device", "cpu", "--rows", "dit:eager", "diffit:eager", "--row-timeout", "1",
                     "--no-sampling", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["train"]
    assert [(r["key"], r["batch"], r["error"]) for r in rows] == [("dit", None, "timed out after 1 s"),
                                                                  ("diffit", None, "timed out after 1 s")]
    assert "| tiny dit | eager | - |" in out.with_suffix(".md").read_text()
    proc = run_bench("--tiny", "--device", "cpu", "--rows", "dit:eager", "--time-budget", "5", "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["train"][0]["error"] == "skipped: time budget spent"
    assert payload["sampling"] == {"error": "skipped: time budget spent"}
