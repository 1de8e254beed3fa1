"""training/posthoc_ema.py and train_latent.py --snapshot-steps: a tiny run that keeps every step's raw weights, so
that the post-hoc EMA must reproduce the EMA the run kept."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffit_hf import DiffiTPipeline
from diffit_hf.training.config import make_config
from diffit_hf.training.ema import list_snapshots, snapshot_path

from ..tiny import weights


@pytest.fixture(scope="module")
def run(script, cache, tmp_path_factory):
    from .conftest import _config

    out = tmp_path_factory.mktemp("snap") / "run"
    result = script("training/train_latent.py").main(
        _config(script("training/train_latent.py"), cache, out, max_steps=7, checkpointing_steps=7, snapshot_steps=2))
    assert result["snapshot_seconds"] > 0
    return out


@pytest.fixture(scope="module")
def posthoc(script):
    module = script("training/posthoc_ema.py")
    return lambda **kw: module.main(make_config(module.PosthocEMAConfig, kw))


def test_snapshots_every_k_steps_and_the_last(run):
    assert [s for s, _ in list_snapshots(run / "snapshots")] == [0, 2, 4, 6, 7]
    ckpt = run / "checkpoints" / "checkpoint-0000007"
    torch.testing.assert_close(load_file(str(snapshot_path(run / "snapshots", 7))), weights(ckpt / "transformer"),
                               rtol=0, atol=0)


def test_the_runs_own_schedule_reproduces_its_ema(run, posthoc, tmp_path):
    # snapshots every 2 steps: each odd step is the mean of its neighbours, so only close, not exact
    summary = posthoc(run=str(run), output=str(tmp_path / "same"))
    ema = weights(run / "checkpoints" / "checkpoint-0000007" / "transformer_ema")
    got = weights(tmp_path / "same" / "transformer")
    assert summary["step"] == 7 and summary["snapshots"] == 5 and summary["max_gap"] == 2
    assert json.loads((tmp_path / "same" / "posthoc_ema.json").read_text())["ema_length_steps"] > 0
    exported = weights(run / "transformer").keys()
    moved = [k for k in ema if not torch.equal(ema[k], load_file(str(snapshot_path(run / "snapshots", 7)))[k])]
    assert moved and set(exported) == set(got)
    error = max((got[k] - ema[k]).abs().max().item() for k in ema)
    spread = max((ema[k] - load_file(str(snapshot_path(run / "snapshots", 0)))[k]).abs().max().item() for k in moved)
    assert error < 0.05 * spread  # the interpolation error is small against how far the weights moved
    pipe = DiffiTPipeline.from_pretrained(tmp_path / "same")
    pipe.set_progress_bar_config(disable=True)
    assert pipe([0], num_inference_steps=2, output_type="np").images.shape == (1, 16, 16, 1)


def test_a_shorter_ema_sits_closer_to_the_last_weights(run, posthoc, tmp_path):
    posthoc(run=str(run), output=str(tmp_path / "long"), ema_power=2 / 3)
    posthoc(run=str(run), output=str(tmp_path / "short"), ema_power=0.2)
    last = load_file(str(snapshot_path(run / "snapshots", 7)))
    long, short = weights(tmp_path / "long" / "transformer"), weights(tmp_path / "short" / "transformer")
    distance = {name: sum((w[k] - last[k]).norm() ** 2 for k in last) for name, w in (("long", long),
                                                                                      ("short", short))}
    assert distance["short"] < distance["long"]


def test_refusals_come_before_any_work(run, posthoc, cache, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="nothing is overwritten"):
        posthoc(run=str(run), output=str(tmp_path / "taken"))
    with pytest.raises(ValueError, match="--run .* and --output .* are both required"):
        posthoc(run=str(run))
    with pytest.raises(ValueError, match="No snapshot of step 5"):
        posthoc(run=str(run), output=str(tmp_path / "x"), step=5)
    # snapshots of another run: the last one differs from this run's checkpoint of that step
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("samples", "logs"))
    last = load_file(str(snapshot_path(other / "snapshots", 7)))
    save_file({k: v + 1 for k, v in last.items()}, str(snapshot_path(other / "snapshots", 7)), metadata={"step": "7"})
    with pytest.raises(ValueError, match="not this run's"):
        posthoc(run=str(other), output=str(tmp_path / "y"))
    shutil.rmtree(other / "snapshots")
    with pytest.raises(FileNotFoundError, match="--snapshot-steps"):
        posthoc(run=str(other), output=str(tmp_path / "z"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "z").exists()


def test_a_new_run_into_a_folder_with_snapshots_is_refused(script, cache, run, tmp_path):
    from .conftest import _config

    shutil.copytree(run / "snapshots", tmp_path / "snapshots")  # only another run's snapshots
    train_latent = script("training/train_latent.py")
    with pytest.raises(FileExistsError, match="snapshots"):
        train_latent.main(_config(train_latent, cache, tmp_path, max_steps=7))
