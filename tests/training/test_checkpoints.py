"""diffit_hf.training.checkpoints: atomic checkpoints, `latest` semantics, with the EMA save/load hooks
(`distributed.register_checkpoint_hooks`) and a real Accelerator on a tiny model."""

import pytest
import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel

from diffit_hf import DiTModel
from diffit_hf.training.checkpoints import latest_checkpoint, list_checkpoints, resume_from_checkpoint, save_checkpoint
from diffit_hf.training.distributed import register_checkpoint_hooks


def tiny_run():
    torch.manual_seed(0)
    model = DiTModel(sample_size=4, patch_size=2, in_channels=1, num_layers=1, num_attention_heads=1,
                     attention_head_dim=8, num_classes=0, learn_sigma=False)
    ema = EMAModel(model.parameters(), decay=0.5, model_cls=DiTModel, model_config=model.config)
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    register_checkpoint_hooks(accelerator, model, ema, name="transformer")
    prepared, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, ema, prepared, optimizer


def train_step(prepared, optimizer, ema, model):
    loss = prepared(torch.randn(2, 1, 4, 4), torch.tensor([1, 2])).sample.square().mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    ema.step(model.parameters())


def snapshot(model, ema):
    return [p.detach().clone() for p in model.parameters()], [p.clone() for p in ema.shadow_params]


def test_hooks_store_model_and_ema_as_save_pretrained_folders_and_restore_them(tmp_path):
    accelerator, model, ema, prepared, optimizer = tiny_run()
    train_step(prepared, optimizer, ema, model)
    path = save_checkpoint(accelerator, tmp_path, 1)
    saved = snapshot(model, ema)
    loaded = DiTModel.from_pretrained(path / "transformer")
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), saved[0], strict=True))  # the weights at step 1
    assert EMAModel.from_pretrained(str(path / "transformer_ema"), DiTModel).optimization_step == 1
    train_step(prepared, optimizer, ema, model)  # move away from the saved state
    assert not torch.equal(next(model.parameters()), saved[0][0])
    assert resume_from_checkpoint(accelerator, "latest", tmp_path) == 1
    for now, then in zip(snapshot(model, ema), saved):
        for a, b in zip(now, then):
            assert torch.equal(a, b)
    assert ema.optimization_step == 1


def test_a_write_that_fails_midway_is_never_taken_for_a_checkpoint(tmp_path, monkeypatch):
    accelerator, model, ema, prepared, optimizer = tiny_run()
    train_step(prepared, optimizer, ema, model)
    save_checkpoint(accelerator, tmp_path, 1)
    good = snapshot(model, ema)
    train_step(prepared, optimizer, ema, model)

    def full_disk(self, *args, **kwargs):  # the transformer is written, then the EMA write fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EMAModel, "save_pretrained", full_disk)
    with pytest.raises(OSError, match=f"No space left on the device of {tmp_path} while writing checkpoint-0000002: "
                                      r"a checkpoint takes about \d+ MiB"):
        save_checkpoint(accelerator, tmp_path, 2)
    assert (tmp_path / "checkpoint-0000002.tmp" / "transformer" / "config.json").exists()  # a real partial write
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0000001"]
    assert resume_from_checkpoint(accelerator, "latest", tmp_path) == 1
    for now, then in zip(snapshot(model, ema), good):
        assert all(torch.equal(a, b) for a, b in zip(now, then))
    monkeypatch.undo()  # the next save replaces the leftover temporary folder
    assert save_checkpoint(accelerator, tmp_path, 2).name == "checkpoint-0000002"
    assert not (tmp_path / "checkpoint-0000002.tmp").exists()


def test_latest_without_checkpoints_starts_fresh_and_a_missing_folder_is_an_error(tmp_path, capsys):
    accelerator, *_ = tiny_run()
    assert resume_from_checkpoint(accelerator, None, tmp_path) == 0
    assert resume_from_checkpoint(accelerator, "latest", tmp_path) == 0
    assert "starting from scratch" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="No checkpoint to resume from"):
        resume_from_checkpoint(accelerator, str(tmp_path / "checkpoint-0000005"), tmp_path)


def test_retention_keeps_the_newest(tmp_path):
    accelerator, *_ = tiny_run()
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, total_limit=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-0000002", "checkpoint-0000003"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-0000003"
