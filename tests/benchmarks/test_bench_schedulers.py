"""benchmarks/bench_schedulers.py: the step-count rule, a tiny end-to-end run (reference sampler, model evaluations
counted, FIDs from the evaluation code), and a scheduler of the wrong family refused before any sampling."""

import json
import sys

import pytest

from diffit_hf import DiffiTPipeline
from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import (
    FashionClassifier,
    feature_stats,
    frechet_distance,
    in_batches,
    load_extractor,
    quantize,
)
from diffit_hf.pipelines.sampling import configure_sampling, sample_indices

from ..conftest import load_script
from ..tiny import save_tiny_pixel_pipeline


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_schedulers.py")


def run(bench, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["bench_schedulers.py", *args])
    bench.main()


def test_fewest_steps_needs_every_larger_count_within_tolerance(bench):
    rows = [{"steps": n, "fid": f} for n, f in [(4, 1.5), (8, 1.09), (16, 1.0), (25, 1.02)]]
    assert bench.fewest_steps(rows, 1.0) == 8
    rows = [{"steps": n, "fid": f} for n, f in [(4, 1.05), (8, 1.2), (16, 1.0)]]
    assert bench.fewest_steps(rows, 1.0) == 16  # 4 is within, but 8 is not: noise, not convergence
    assert bench.fewest_steps([{"steps": 25, "fid": 1.2}], 1.0) is None


@pytest.fixture
def tiny_pipeline(tmp_path):
    save_tiny_pixel_pipeline(tmp_path / "pipe")
    FashionClassifier().save_pretrained(tmp_path / "clf")
    return tmp_path


def test_bench_schedulers_tiny_run(bench, tiny_pipeline, monkeypatch):
    out = tiny_pipeline / "s.json"
    run(bench, monkeypatch, "--pipeline", str(tiny_pipeline / "pipe"), "--classifier", str(tiny_pipeline / "clf"),
        "--num-samples", "20", "--batch-size", "10", "--schedulers", "ddim", "heun", "--steps", "2", "3",
        "--reference-steps", "5", "--threads", "1", "--output", str(out))
    payload = json.loads(out.read_text())
    ref = payload["reference"]
    assert (ref["scheduler"], ref["steps"], ref["nfe"]) == ("ddpm", 5, 5)  # an epsilon model's reference: DDPM
    rows = {(r["scheduler"], r["steps"]): r for r in payload["rows"]}
    assert set(rows) == {("ddim", 2), ("ddim", 3), ("heun", 2), ("heun", 3)}
    assert rows[("ddim", 3)]["nfe"] == 3
    assert rows[("heun", 3)]["nfe"] == 5  # Heun: two evaluations per step but the last (counted, not assumed)
    for r in [ref, *rows.values()]:
        assert r["fid"] > 0 and r["images_per_s"] > 0
    for name in ("ddim", "heun"):
        mine = [r for r in payload["rows"] if r["scheduler"] == name]
        assert payload["fewest_steps"][name] == bench.fewest_steps(mine, ref["fid"])
    table = out.with_suffix(".md").read_text()
    assert "| ddpm (reference) | 5 | 5 |" in table and "| heun | 3 | 5 |" in table
    # the reference FID, recomputed here from the same seeded samples with the evaluation code
    pipe = DiffiTPipeline.from_pretrained(tiny_pipeline / "pipe")
    sampling = configure_sampling(pipe, scheduler="ddpm", num_inference_steps=5, guidance_scale=4.0)
    images, _ = sample_indices(pipe, list(range(20)), batch_size=10, **sampling)
    extractor = load_extractor(str(tiny_pipeline / "clf"))
    real_images, _ = load_image_tensors("fashion-mnist", "test", 32, True, label_column=None)
    expected = frechet_distance(*feature_stats(in_batches(extractor, real_images)),
                                *feature_stats(in_batches(extractor, quantize(images * 2 - 1))))
    assert ref["fid"] == pytest.approx(expected, rel=1e-6)
    assert len({round(r["fid"], 9) for r in [ref, *rows.values()]}) == 5  # each sampler its own samples


def test_bench_schedulers_refuses_a_flow_scheduler_for_an_epsilon_model(bench, tiny_pipeline, monkeypatch, capsys):
    out = tiny_pipeline / "s.json"
    with pytest.raises(SystemExit) as exit_info:
        run(bench, monkeypatch, "--pipeline", str(tiny_pipeline / "pipe"), "--classifier",
            str(tiny_pipeline / "clf"), "--schedulers", "dpm", "nope", "--output", str(out))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "scheduler(s) nope do not sample this epsilon model" in err and "ddpm, ddim, dpm, euler, heun" in err
    assert not out.exists()
