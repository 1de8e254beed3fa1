"""benchmarks/bench_diffit.py's helpers for the DiffiT-vs-DiT seed runs: a run's raw-weight pipeline from its last
checkpoint, the late training loss, the seed-by-seed summary, and the held-out flow loss by noise level (a tiny run
end to end: equal runs score equal, a VAE that differs or a non-flow run is refused before any scoring)."""

import json

import pytest
import torch
from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

from diffit_hf import DiffiTPipeline, DiTModel

from ..conftest import load_script
from ..tiny import perturb, tiny_pipeline, tiny_vae, weights


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_diffit.py")


def saved_run(folder, steps=10):
    """A finished run: its exported pipeline, train_results.json, and a last checkpoint whose raw weights differ from
    the EMA ones."""
    pipe = tiny_pipeline()
    pipe.save_pretrained(folder)
    (folder / "train_results.json").write_text(json.dumps({"steps": steps}))
    checkpoint = folder / "checkpoints" / f"checkpoint-{steps:07d}"
    pipe.transformer.save_pretrained(checkpoint / "transformer_ema")
    perturb(pipe.transformer, std=0.5).save_pretrained(checkpoint / "transformer")
    return folder


def test_checkpoint_pipeline_raw_weights_are_the_checkpoints_not_the_ema(bench, tmp_path):
    run = saved_run(tmp_path / "run")
    assert bench.checkpoint_pipeline(run, 10) == run  # the EMA at the last step: the exported pipeline itself
    raw = bench.checkpoint_pipeline(run, 10, weights="raw")
    assert raw == run / "raw-10"
    got, want = weights(raw / "transformer"), weights(run / "checkpoints" / "checkpoint-0000010" / "transformer")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    ema = weights(run / "transformer")
    assert any(not torch.equal(got[k], ema[k]) for k in got)
    assert (raw / "vae").is_dir()
    with pytest.raises(ValueError, match="valid choices are ema, raw"):
        bench.checkpoint_pipeline(run, 10, weights="posthoc")
    with pytest.raises(FileNotFoundError, match="no checkpoint of step 7"):
        bench.checkpoint_pipeline(run, 7, weights="raw")


def test_late_loss_averages_the_last_fifth_of_the_logged_steps(bench, tmp_path):
    (tmp_path / "logs").mkdir()
    rows = "".join(f"{s},{float(s)},{float(s)},0.0,0.001\n" for s in range(1, 11))
    (tmp_path / "logs" / "loss.csv").write_text("step,loss,mse,vb,lr\n" + rows)
    assert bench.late_loss(tmp_path) == pytest.approx(9.5)  # steps 9 and 10
    assert bench.late_loss(tmp_path / "elsewhere") is None


def test_seed_summary_pairs_every_diffit_model_with_every_dit_model_seed_by_seed(bench):
    def row(run, fid, fid2, loss=None):
        return {"run": run, "schedule": "constant", "scale": 3.0, "interval": [0.3, 5.0], "fid": fid, "fid2": fid2,
                "train_loss_last_20pct": loss}

    rows = [row("DiT, seed 0", 1.0, 3.0, 0.2), row("DiT, seed 1", 2.0, 4.0, 0.3),
            row("DiffiT, seed 0", 0.5, 3.5, 0.1), row("DiffiT, seed 1", 2.5, 3.0, 0.4),
            row("DiT (raw weights), seed 0", 1.5, 3.5), row("DiT (raw weights), seed 1", 1.0, 5.0)]
    lines = bench.seed_summary(rows)
    pairs = [line for line in lines if line.startswith("| constant")]
    assert len(pairs) == 2  # DiffiT against each of the two DiT models
    assert "| DiffiT | DiT |" in pairs[0] and "0: -0.500 / +0.500, 1: +0.500 / -1.000" in pairs[0]
    assert pairs[0].endswith("| 1 / 1 of 2 |")
    assert "| DiffiT | DiT (raw weights) |" in pairs[1] and "0: -1.000 / +0.000, 1: +1.500 / -2.000" in pairs[1]
    assert pairs[1].endswith("| 1 / 1 of 2 |")  # a tie is not "lower"
    assert "| DiT | 0.2000 | 0.3000 | nan |" in lines and "| DiffiT | 0.1000 | 0.4000 | nan |" in lines


def flow_pipeline(vae_seed=0, std=0.05):
    """A tiny flow pipeline of the demo's shapes (32 px -> 16x16x4 latents, 16 tokens)."""
    torch.manual_seed(0)
    model = perturb(DiTModel(sample_size=16, patch_size=4, in_channels=4, num_layers=1, num_attention_heads=2,
                             attention_head_dim=8, num_classes=10, learn_sigma=False), std=std)
    return DiffiTPipeline(transformer=model, scheduler=FlowMatchEulerDiscreteScheduler(),
                          vae=tiny_vae(32, seed=vae_seed))


def test_demo_loss_scores_runs_alike_and_refuses_runs_that_do_not_match(bench, tmp_path, monkeypatch):
    flow_pipeline().save_pretrained(tmp_path / "a")
    flow_pipeline().save_pretrained(tmp_path / "b")
    flow_pipeline(std=0.3).save_pretrained(tmp_path / "c")
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "DEMO_RUN_SETS", {"t": {"DiT, seed 0": "a", "DiffiT, seed 0": "b",
                                                       "Other, seed 0": "c"}})
    args = type("Args", (), {"demo_runs": "t", "num_samples": 12, "threads": 1})()
    result = bench.demo_loss(args)
    a, b, c = (r["loss"] for r in result["rows"])
    assert list(a) == [str(t) for t in bench.LOSS_TIMES]
    assert a == b and a != c  # the same weights score the same: same latents, same noise
    assert all(v["conditional"] != v["unconditional"] for v in a.values())  # the null label is another input
    table = bench.render_loss(result).splitlines()
    assert "| DiffiT | " + " | ".join(["0 of 1, +0.0%"] * len(bench.LOSS_TIMES)) + " |" in table
    assert "| DiT | 1 | " in "\n".join(table) and "| Other | 1 | " in "\n".join(table)

    zero = flow_pipeline()  # a velocity of 0 everywhere: the loss is |noise - x_0|^2, whatever t and the label
    with torch.no_grad():
        zero.transformer.final_layer.proj_out.weight.zero_()
        zero.transformer.final_layer.proj_out.bias.zero_()
    zero.save_pretrained(tmp_path / "c")
    target = [v for r in bench.demo_loss(args)["rows"][2:] for t in r["loss"].values() for v in t.values()]
    assert max(target) - min(target) < 1e-5 * max(target)

    flow_pipeline(vae_seed=1).save_pretrained(tmp_path / "b")
    with pytest.raises(ValueError, match="do not share one VAE"):
        bench.demo_loss(args)
    tiny_pipeline(scheduler=DDPMScheduler()).save_pretrained(tmp_path / "d")
    monkeypatch.setattr(bench, "DEMO_RUN_SETS", {"t": {"DiT, seed 0": "d"}})
    with pytest.raises(ValueError, match="not trained with the flow objective"):
        bench.demo_loss(args)
