"""Fault injection, end to end on tiny runs of training/train_latent.py: each scenario asserts the message (or the
refusal) and that nothing the user had was lost."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from diffit_hf.data import LatentDataset
from diffit_hf.training.checkpoints import list_checkpoints

from ..tiny import weights


def snapshot(folder):
    """{relative path: bytes} of every file below `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def loss_steps(out):
    with open(out / "logs" / "loss.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_a_new_run_never_overwrites_an_old_one(train_latent, config, cache, tmp_path):
    out = tmp_path / "run"
    train_latent.main(config(cache, out, max_steps=6, checkpointing_steps=2))
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="--resume-from-checkpoint latest.*another --output-dir.*"
                                              "--overwrite-output-dir"):
        train_latent.main(config(cache, out, max_steps=2, checkpointing_steps=1))
    assert snapshot(out) == before  # refused before any work: nothing changed
    # the explicit choice replaces the old run entirely: no checkpoint of the old run survives to be resumed
    train_latent.main(config(cache, out, max_steps=2, checkpointing_steps=1, overwrite_output_dir=True))
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["checkpoint-0000001", "checkpoint-0000002"]
    assert loss_steps(out) == [1, 2]


def test_latest_skips_incomplete_checkpoints_and_says_why(train_latent, config, cache, tmp_path, capsys):
    out = tmp_path / "run"
    train_latent.main(config(cache, out, max_steps=4, checkpointing_steps=2))
    (out / "checkpoints" / "checkpoint-0000009").mkdir()  # empty
    broken = out / "checkpoints" / "checkpoint-0000008"
    (out / "checkpoints" / "checkpoint-0000004").rename(broken)
    for p in (broken / "transformer_ema").iterdir():
        p.unlink()
    (broken / "transformer_ema").rmdir()
    capsys.readouterr()
    train_latent.main(config(cache, out, max_steps=5, checkpointing_steps=100, resume_from_checkpoint="latest"))
    printed = capsys.readouterr().out
    assert "checkpoint-0000009 (transformer/config.json is missing)" in printed
    assert "checkpoint-0000008 (transformer_ema/config.json is missing)" in printed
    assert "resumed from" in printed and "checkpoint-0000002 at step 2" in printed
    assert loss_steps(out) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="Cannot resume from .*checkpoint-0000008: transformer_ema/config.json"):
        train_latent.main(config(cache, out, max_steps=9, resume_from_checkpoint=str(broken)))


def test_resume_refuses_another_model_or_changed_settings_before_loading(train_latent, config, cache, tmp_path):
    out = tmp_path / "run"
    train_latent.main(config(cache, out, max_steps=2, checkpointing_steps=2))
    before = snapshot(out)
    other = json.dumps({"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 16})
    with pytest.raises(ValueError, match="model_config"):  # the run's config says so first
        train_latent.main(config(cache, out, max_steps=4, model_config=other, resume_from_checkpoint="latest"))
    with pytest.raises(ValueError, match=r"changed settings \(learning_rate 0.001 -> 0.0003\)"):
        train_latent.main(config(cache, out, max_steps=4, learning_rate=3e-4, resume_from_checkpoint="latest"))
    assert snapshot(out) == before  # train_config.json still records what the checkpoints hold
    # without the run's config (a copied checkpoint), the checkpoint's own model config is compared
    (out / "train_config.json").unlink()
    with pytest.raises(ValueError, match="holds another model .*num_layers: checkpoint 2, this run 1"):
        train_latent.main(config(cache, out, max_steps=4, model_config=other, resume_from_checkpoint="latest"))
    # settings that do not change what the checkpoint holds may change
    train_latent.main(config(cache, out, max_steps=3, log_every=1, resume_from_checkpoint="latest"))
    assert loss_steps(out) == [1, 2, 3]


def loss_rows(out):
    with open(out / "logs" / "loss.csv") as f:
        return [(row["step"], row["loss"], row["lr"]) for row in csv.DictReader(f)]


def test_a_wsd_decay_branched_from_a_constant_lr_checkpoint_is_the_wsd_run(train_latent, config, cache, tmp_path):
    common = dict(lr_warmup_steps=2, log_every=1, checkpointing_steps=4)
    wsd = dict(max_steps=6, lr_scheduler="wsd", lr_decay_steps=2)
    train_latent.main(config(cache, tmp_path / "wsd", **wsd, **common))
    branched = tmp_path / "branched"  # a constant-lr run, then its checkpoint at step 4 resumed with the decay
    train_latent.main(config(cache, branched, max_steps=4, lr_scheduler="constant_with_warmup", **common))
    train_latent.main(config(cache, branched, **wsd, resume_from_checkpoint="latest", **common))
    assert loss_rows(branched) == loss_rows(tmp_path / "wsd")  # the loss and lr of every step
    assert [float(lr) for *_, lr in loss_rows(branched)] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 5e-4, 0.0])
    a, b = weights(branched / "transformer"), weights(tmp_path / "wsd" / "transformer")  # the EMA, exported
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a decay that would have started before the resumed step changes the lr of steps taken: refused, nothing lost
    before = snapshot(branched)
    with pytest.raises(ValueError, match=r"at step 6 .*step 5: 0\.5 x the lr before, 0\.75 x now"):
        train_latent.main(config(cache, branched, max_steps=8, lr_scheduler="wsd", lr_decay_steps=4,
                                 resume_from_checkpoint="latest", **common))
    assert snapshot(branched) == before


def test_loss_history_survives_a_crash_and_keeps_exactly_the_resumed_rows(train_latent, config, cache, tmp_path,
                                                                           monkeypatch):
    out = tmp_path / "run"

    def crash(cfg, accelerator, transformer, ema, scheduler, vae, id2label, step):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_latent, "log_validation", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):  # after step 3, whose rows were never logged
        train_latent.main(config(cache, out, max_steps=6, checkpointing_steps=2, log_every=100, validation_steps=3))
    assert loss_steps(out) == [1, 2]  # flushed with the checkpoint at step 2
    monkeypatch.undo()
    train_latent.main(config(cache, out, max_steps=6, checkpointing_steps=2, log_every=100, validation_steps=100,
                             resume_from_checkpoint="latest"))
    assert loss_steps(out) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("every, seen, reductions", [(1, "", 4), (3, " (found at the check of step 6)", 2)])
def test_nan_loss_names_what_to_change_and_the_last_finite_checkpoint(train_latent, config, cache, tmp_path,
                                                                      monkeypatch, every, seen, reductions):
    """The losses are checked on logging steps and before every checkpoint (one reduction and host copy each, none
    on the other steps): a NaN at step 4 is named by its step, and no checkpoint holds its weights."""
    from accelerate import Accelerator

    make, reduce, calls_to_reduce = train_latent.make_objective, Accelerator.reduce, []

    def counted_reduce(self, *args, **kwargs):
        calls_to_reduce.append(1)
        return reduce(self, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "reduce", counted_reduce)

    def nan_at_step_4(*args, **kwargs):  # a divergence at step 4 (the 4th batch), as a too-high lr gives
        objective, calls = make(*args, **kwargs), []
        losses = objective.training_losses

        def training_losses(*a, **k):
            calls.append(1)
            out = losses(*a, **k)
            return {k: v * float("nan") for k, v in out.items()} if len(calls) == 4 else out

        objective.training_losses = training_losses
        return objective

    monkeypatch.setattr(train_latent, "make_objective", nan_at_step_4)
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError) as err:
        train_latent.main(config(cache, out, max_steps=8, checkpointing_steps=every, log_every=every))
    message = str(err.value)
    assert f"Loss is nan at step 4{seen}; stopping before a checkpoint holds its weights" in message
    assert len(calls_to_reduce) == reductions  # steps 1-4 or steps 3 and 6: no reduction on other steps
    assert "lower --learning-rate, set --max-grad-norm" in message
    last = out / "checkpoints" / "checkpoint-0000003"
    assert f"newest checkpoint with finite weights is {last}" in message
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == last.name
    assert all(torch.isfinite(t).all() for t in weights(last / "transformer").values())


def test_non_finite_latents_are_refused_naming_the_shard_and_row(cache, tmp_path):
    bad = tmp_path / "bad-cache"
    bad.mkdir()
    for f in cache.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    shard = load_file(str(bad / "shard-00001.safetensors"))
    shard["mean"][5, 0, 0, 0] = float("nan")
    with safe_open(str(cache / "shard-00001.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    save_file(shard, str(bad / "shard-00001.safetensors"), metadata=metadata)
    data = LatentDataset(bad, resample=False)  # rows are read (and checked) lazily, when fetched
    assert torch.equal(data[132][0], LatentDataset(cache, resample=False)[132][0])
    with pytest.raises(ValueError, match=r"shard-00001.safetensors holds non-finite latents in rows \[5\] "
                                         r"\(samples \[133\]\)"):
        data[133]


def test_command_line_mistakes_are_named_before_any_work(script, train_latent, config, cache, tmp_path):
    from accelerate import Accelerator

    from diffit_hf.data import encode_dataset
    from diffit_hf.training.config import make_config

    generate = script("pipelines/generate.py")
    (tmp_path / "pipe").mkdir()
    with pytest.raises(ValueError, match="the folder .*nowhere does not exist"):
        make_config(generate.GenerateConfig, {"model": str(tmp_path / "pipe"), "out": str(tmp_path / "nowhere/a.png")})
    with pytest.raises(ValueError, match="unknown image extension '.txt'"):
        make_config(generate.GenerateConfig, {"model": str(tmp_path / "pipe"), "out": str(tmp_path / "grid.txt")})
    with pytest.raises(ValueError, match="no such pipeline folder"):  # not looked up on the Hub
        make_config(generate.GenerateConfig, {"model": str(tmp_path / "missing"), "out": str(tmp_path / "g.png")})
    assert make_config(generate.GenerateConfig, {"model": "someone/dit-repo"}).model == "someone/dit-repo"
    with pytest.raises(ValueError, match="--lr-finder-min must lie below --lr-finder-max"):
        train_latent.main(config(cache, tmp_path / "lrf", lr_finder=True, lr_finder_min=1e-2, lr_finder_max=1e-3))
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match="is a pipeline folder, not a VAE: pass --vae-subfolder vae"):
        encode_dataset(Accelerator(cpu=True), str(tmp_path / "pipe"), "fashion-mnist", tmp_path / "c", 16)


def test_the_vae_and_the_cache_belong_together(train_latent, config, cache, tmp_path, monkeypatch):
    from diffusers import AutoencoderKL

    from diffit_hf.data.cache_format import vae_fingerprint

    from ..tiny import tiny_vae

    other = tmp_path / "other-vae"
    tiny_vae(sample_size=16, scaling_factor=0.5, seed=1).save_pretrained(other)
    with pytest.raises(ValueError, match="did not encode this cache .*Use the cache's own VAE"):
        train_latent.main(config(cache, tmp_path / "run", vae=str(other)))
    assert not (tmp_path / "run" / "checkpoints").exists()
    # the fingerprint is the weights', whatever the path's spelling
    vae_dir = json.loads((cache / "index.json").read_text())["vae"]
    monkeypatch.chdir(tmp_path)
    spellings = [vae_dir, vae_dir + "/", os.path.relpath(vae_dir, tmp_path)]
    assert len({vae_fingerprint(AutoencoderKL.from_pretrained(p)) for p in spellings}) == 1


def test_a_damaged_cache_names_the_file_and_how_to_rebuild_it(cache, tmp_path):
    def copy(name):
        folder = tmp_path / name
        folder.mkdir()
        for f in cache.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        return folder

    edited = copy("edited")
    index = json.loads((edited / "index.json").read_text())
    index["latent_shape"] = [4, 16, 16]
    (edited / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"shard-00000.safetensors holds torch.float32 latents of shape \(4, 8, 8\); "
                                         r"index.json says float32 \[4, 16, 16\]"):
        LatentDataset(edited)
    truncated = copy("truncated")
    data = (truncated / "shard-00001.safetensors").read_bytes()
    (truncated / "shard-00001.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="shard-00001.safetensors is missing or truncated .*encode_latents.py"):
        LatentDataset(truncated)
    corrupt = copy("corrupt")
    (corrupt / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json is corrupt"):
        LatentDataset(corrupt)


@pytest.mark.parametrize("gamma", [-5.0, 0.0, float("nan")])
def test_snr_gamma_must_be_positive(train_latent, config, cache, tmp_path, gamma):
    """A negative gamma trains by gradient ascent, 0 with a zero loss: refused before the run folder exists."""
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"snr_gamma \(min-SNR weighting\) must be > 0, got .*leave it unset"):
        train_latent.main(config(cache, out, snr_gamma=gamma))
    assert not out.exists()


def test_generate_never_overwrites_earlier_samples_without_overwrite(script, tmp_path):
    from diffit_hf.training.config import make_config

    from ..tiny import save_tiny_pixel_pipeline

    generate = script("pipelines/generate.py")
    pipe = save_tiny_pixel_pipeline(tmp_path / "pipe", sample_size=8, patch_size=4)

    def run(out, n, **kw):
        generate.main(make_config(generate.GenerateConfig, dict(model=str(pipe), num_samples=n, steps=1, out=out,
                                                                device="cpu", **kw)))

    folder = tmp_path / "samples"
    run(str(folder) + "/", 3)
    before = snapshot(folder)
    with pytest.raises(FileExistsError, match=r"samples already holds 4 files of earlier samples; pass --overwrite"):
        run(str(folder) + "/", 2)
    assert snapshot(folder) == before
    run(str(folder) + "/", 2, overwrite=True)  # replaced: no sample of the old job stays beside the new ones
    assert sorted(snapshot(folder)) == ["000000.png", "000001.png", "labels.json"]
    assert sorted(json.loads((folder / "labels.json").read_text())) == ["000000.png", "000001.png"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"photos holds files that are not samples \(holiday.jpg\)"):
        run(str(photos), 2, overwrite=True)  # not even with --overwrite
    assert snapshot(photos) == {"holiday.jpg": b"mine"}
    npz = tmp_path / "samples.npz"
    npz.write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match=r"samples.npz exists; pass --overwrite to replace it"):
        run(str(npz), 2)
    assert npz.read_bytes() == b"earlier"
    run(str(npz), 2, overwrite=True)
    assert len(np.load(npz)["arr_1"]) == 2


def test_a_cache_is_never_completed_or_relabelled_with_another_dataset(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Image

    from diffit_hf.data import encode_to_cache

    from ..tiny import tiny_vae

    def images(seed, labels=None):
        rng = np.random.default_rng(seed)
        features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
        return Dataset.from_dict({"image": list(rng.integers(0, 256, (8, 8, 8), dtype=np.uint8)),
                                  "label": labels or [i % 3 for i in range(8)]}, features=features)

    vae = tiny_vae(sample_size=8)

    def encode(data, out, **kw):
        return encode_to_cache(vae, data, out, resolution=8, grayscale=True, shard_size=4, progress=False, **kw)

    first, other = images(0), images(1)
    encode(first, tmp_path / "cache", dataset_name="first", split="train")
    before = snapshot(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"cache made with dataset_fingerprint='\w+', this run has '\w+' .*dataset "
                                         r"'first' vs 'second'.*another --out, or delete the folder"):
        encode(other, tmp_path / "cache", dataset_name="second", split="train")
    with pytest.raises(ValueError, match="dataset_fingerprint"):  # the same images with other labels
        encode(images(0, labels=[0] * 8), tmp_path / "cache", dataset_name="first", split="train")
    with pytest.raises(ValueError, match="cache made with split='train', this run has 'test'"):
        encode(first, tmp_path / "cache", dataset_name="first", split="test")
    assert snapshot(tmp_path / "cache") == before  # nothing encoded, the index not relabelled
    # an interrupted encode (shard 0 of 2, no index yet) is not finished with another dataset
    encode(first, tmp_path / "partial", process_index=0, num_processes=2)
    partial = snapshot(tmp_path / "partial")
    with pytest.raises(ValueError, match=r"shard-00000.safetensors was made by another encode \(dataset_fingerprint"
                                         r" \w+ -> \w+;.*\): refusing to mix caches"):
        encode(other, tmp_path / "partial")
    assert snapshot(tmp_path / "partial") == partial
    # a cache whose shards were mixed by hand is refused when read
    encode(other, tmp_path / "other")
    (tmp_path / "cache" / "shard-00001.safetensors").write_bytes((tmp_path / "other" / "shard-00001.safetensors")
                                                                 .read_bytes())
    with pytest.raises(ValueError, match=r"shard-00001.safetensors holds latents of another dataset .*delete "
                                         r"shard-00001.safetensors and rerun training/encode_latents.py"):
        LatentDataset(tmp_path / "cache")


def test_init_from_refuses_a_source_whose_config_differs_with_the_same_shapes(tmp_path):
    from diffit_hf.models.presets import create_model_for_data
    from diffit_hf.training.init_weights import init_from_pretrained

    create_model_for_data("DiT-S/2", (4, 8, 8), 10, num_layers=1, num_attention_heads=2,
                          attention_head_dim=16).save_pretrained(tmp_path / "source")
    model = create_model_for_data("DiT-S/2", (4, 8, 8), 10, num_layers=1, num_attention_heads=4, attention_head_dim=8)
    assert {k: v.shape for k, v in weights(tmp_path / "source").items()} == \
        {k: v.shape for k, v in model.state_dict().items()}  # every tensor fits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"was trained with another model config \(num_attention_heads: source 2, "
                                         r"this run 4; attention_head_dim: source 16, this run 8\).*--model-config"):
        init_from_pretrained(model, str(tmp_path / "source"), log=lambda _: None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing loaded
    # the keys fine-tuning may change still load: another class count and resolution
    other = create_model_for_data("DiT-S/2", (4, 16, 16), 3, num_layers=1, num_attention_heads=2,
                                  attention_head_dim=16)
    assert init_from_pretrained(other, str(tmp_path / "source"), log=lambda _: None) == \
        ["cond_embed.class_embedder.weight"]


def test_a_moved_cache_vae_is_named_instead_of_looked_up_on_the_hub(cache, tmp_path):
    from diffit_hf.data import load_cache_vae

    meta = json.loads((cache / "index.json").read_text())
    moved = {**meta, "vae": str(tmp_path / "gone" / "vae")}
    with pytest.raises(ValueError, match=r"The cache's VAE at .*gone/vae is missing \(moved or deleted\): pass the "
                                         r"VAE that encoded the cache with --vae"):
        load_cache_vae(moved)
    with pytest.raises(ValueError, match=r"--vae .*elsewhere: no such folder"):
        load_cache_vae(meta, str(tmp_path / "elsewhere"))
    assert load_cache_vae(moved, meta["vae"]).config.latent_channels == 4  # the way out


def test_a_file_that_is_not_a_checkpoint_is_named_without_unsafe_advice(script, tmp_path, monkeypatch):
    from diffit_hf.models.presets import create_model_for_data
    from diffit_hf.training.config import parse_config
    from diffit_hf.training.init_weights import init_from_pretrained

    from ..tiny import save_tiny_pixel_pipeline

    notes = tmp_path / "notes.pt"
    notes.write_bytes(b"my notes, not a checkpoint")
    model = create_model_for_data("DiT-S/2", (4, 8, 8), 10, num_layers=1)
    not_a_checkpoint = r"notes.pt: not a checkpoint of tensors, or a damaged one \(UnpicklingError\)"
    with pytest.raises(ValueError, match=f"--init-from .*{not_a_checkpoint}") as err:
        init_from_pretrained(model, str(notes), log=lambda _: None)
    assert "weights_only` set to `False`" not in str(err.value) and err.value.__cause__ is None
    convert = script("pipelines/convert_dit.py")

    def vae_first(name):  # the VAE (a download) is loaded only once the source is known to be good
        raise AssertionError("the VAE was loaded before the checkpoint was checked")

    monkeypatch.setattr(convert, "load_vae", vae_first)
    with pytest.raises(ValueError, match=f"--official .*{not_a_checkpoint}"):
        convert.main(parse_config(convert.ConvertConfig, ["--official", str(notes), "--out", str(tmp_path / "o")]))
    save_tiny_pixel_pipeline(tmp_path / "ours", sample_size=8, patch_size=4)
    with pytest.raises(ValueError, match="holds a DiTModel, not a diffusers DiTTransformer2DModel: it is already a "
                                         "diffit_hf pipeline and needs no conversion"):
        convert.main(parse_config(convert.ConvertConfig, ["--diffusers", str(tmp_path / "ours"),
                                                          "--out", str(tmp_path / "o")]))
    assert not (tmp_path / "o").exists()


def test_a_shard_truncated_or_replaced_while_a_run_reads_it_is_named(cache, tmp_path):
    copy = tmp_path / "cache"
    copy.mkdir()
    for f in cache.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    shard = copy / "shard-00001.safetensors"
    data = LatentDataset(copy, resample=False)  # the headers are read here, the rows later
    original = data[133][0]
    # replaced (e.g. an encode into the same folder): the same layout, other rows, a new file
    tensors = load_file(str(shard))
    tensors["mean"] = tensors["mean"] + 1.0
    with safe_open(str(shard), framework="pt") as f:
        metadata = f.metadata()
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata=metadata)
    os.replace(tmp_path / "new.safetensors", shard)
    with pytest.raises(ValueError, match=r"shard-00001.safetensors was replaced or rewritten while this run read it "
                                         r".*resume the run from its latest checkpoint"):
        data[133]
    assert torch.equal(data[5][0], LatentDataset(cache, resample=False)[5][0])  # the other shard still reads
    assert torch.equal(LatentDataset(copy, resample=False)[133][0], original + tensors["mean"].new_tensor(0.5))
    # truncated while read: the shard and the way to rebuild it, not a bare "short read"
    data = LatentDataset(copy, resample=False)
    shard.write_bytes(shard.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"shard-00001.safetensors was truncated while this run read it "
                                         r"\(\d+ of \d+ bytes\): delete it and rebuild it with "
                                         r"training/encode_latents.py"):
        data[133]


def test_latest_validates_every_file_it_loads_and_falls_back(train_latent, config, cache, tmp_path, capsys):
    import shutil

    from diffit_hf.training.checkpoints import resolve_checkpoint

    out = tmp_path / "run"
    train_latent.main(config(cache, out, max_steps=4, checkpointing_steps=2))
    ckpts, newest = out / "checkpoints", out / "checkpoints" / "checkpoint-0000004"
    shutil.copytree(newest, tmp_path / "pristine")

    def cut(name):
        (newest / name).write_bytes((newest / name).read_bytes()[:-100])

    damages = {  # what happened to the newest checkpoint -> the reason `latest` gives for skipping it
        "scheduler.bin is missing": lambda: (newest / "scheduler.bin").unlink(),
        "optimizer.bin is truncated": lambda: cut("optimizer.bin"),
        "random_states_0.pkl is truncated": lambda: cut("random_states_0.pkl"),
        "transformer/diffusion_pytorch_model.safetensors is truncated": lambda: cut(
            "transformer/diffusion_pytorch_model.safetensors"),
        "transformer_ema/config.json is unreadable": lambda: (newest / "transformer_ema/config.json").write_text(""),
    }
    for reason, damage in damages.items():
        damage()
        said = []
        assert resolve_checkpoint("latest", ckpts, ("transformer", "transformer_ema"), log=said.append,
                                  num_schedulers=1).name == "checkpoint-0000002", reason
        assert len(said) == 1 and f"checkpoint-0000004 ({reason}" in said[0]
        shutil.rmtree(newest)
        shutil.copytree(tmp_path / "pristine", newest)
    # end to end: a truncated RNG state (which accelerate would skip silently) makes the run resume the older one
    cut("random_states_0.pkl")
    capsys.readouterr()
    train_latent.main(config(cache, out, max_steps=5, checkpointing_steps=100, resume_from_checkpoint="latest"))
    printed = capsys.readouterr().out
    assert "checkpoint-0000004 (random_states_0.pkl is truncated" in printed and "at step 2" in printed
    assert loss_steps(out) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"Cannot resume from .*checkpoint-0000004: random_states_0.pkl is "
                                         r"truncated.*Resume from another checkpoint"):
        train_latent.main(config(cache, out, max_steps=9, resume_from_checkpoint=str(newest)))


def test_resuming_with_another_number_of_processes_is_refused_naming_the_change(train_latent, config, cache,
                                                                                 tmp_path):
    from diffit_hf.training.checkpoints import resolve_checkpoint

    out = tmp_path / "run"
    train_latent.main(config(cache, out, max_steps=2, checkpointing_steps=2))
    ckpt = out / "checkpoints" / "checkpoint-0000002"
    assert json.loads((ckpt / "processes.json").read_text()) == {"num_processes": 1, "batch_per_process": 16}
    # 1 -> 2: the complete checkpoint is named as written by 1 process, not called incomplete
    with pytest.raises(ValueError, match=r"written by 1 process\(es\) \(global batch 1 x 16 = 16\); this run has 2 "
                                         r"\(global batch 2 x 16 = 32\).*accelerate launch --num_processes 1"):
        resolve_checkpoint("latest", out / "checkpoints", ("transformer", "transformer_ema"), num_processes=2,
                           num_schedulers=1, batch_per_process=16)
    # 2 -> 1 (a checkpoint as two processes write it): refused before anything is loaded or written
    (ckpt / "random_states_1.pkl").write_bytes((ckpt / "random_states_0.pkl").read_bytes())
    (ckpt / "processes.json").write_text(json.dumps({"num_processes": 2, "batch_per_process": 16}))
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) \(global batch 2 x 16 = 32\); this run has 1 "
                                         r"\(global batch 1 x 16 = 16\): resuming would change the global batch.*"
                                         r"--init-from .*checkpoint-0000002/transformer in another --output-dir"):
        train_latent.main(config(cache, out, max_steps=4, resume_from_checkpoint="latest"))
    assert snapshot(out) == before


def test_evaluate_refuses_unlike_images_and_warns_of_a_rank_deficient_fid(script, tmp_path):
    from diffit_hf.evaluation import FashionClassifier
    from diffit_hf.training.config import make_config

    from ..tiny import save_tiny_pixel_pipeline

    evaluate = script("training/evaluate.py")
    save_tiny_pixel_pipeline(tmp_path / "pipe", sample_size=16, patch_size=8)  # 16-px grayscale samples
    FashionClassifier().save_pretrained(tmp_path / "clf")
    values = dict(pipeline=str(tmp_path / "pipe"), num_samples=8, batch_size=8, num_inference_steps=1,
                  scheduler="ddim", extractor=str(tmp_path / "clf"), classifier=None, second_extractor=None,
                  floor_split=None, reference_limit=50, cache_dir=str(tmp_path / "stats"),
                  output=str(tmp_path / "eval.json"))
    with pytest.raises(ValueError, match=r"samples 1x16x16 images \(channels x height x width\); the real images are "
                                         r"read as 1x32x32.*Pass --resolution 16 and --grayscale"):
        evaluate.main(make_config(evaluate.EvalConfig, values))  # refused before sampling: nothing written
    with pytest.raises(ValueError, match=r"read as 3x16x16.*--resolution 16 and --grayscale"):
        evaluate.main(make_config(evaluate.EvalConfig, {**values, "resolution": 16, "grayscale": False}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf", "pipe"]
    dim = FashionClassifier.from_pretrained(tmp_path / "clf").features(torch.zeros(1, 1, 32, 32)).shape[1]
    assert dim >= 50
    result = evaluate.main(make_config(evaluate.EvalConfig, {**values, "resolution": 16}))
    assert result["warnings"] == [
        f"FID from 8 samples of {dim}-d features: the covariance is rank-deficient (rank <= 7 < {dim}), so this FID "
        f"is biased and not comparable with others; use more than {dim} (ideally 10x as many).",
        f"FID from 50 reference images of {dim}-d features: the covariance is rank-deficient (rank <= 49 < {dim}), "
        f"so this FID is biased and not comparable with others; use more than {dim} (ideally 10x as many)."]
    assert json.loads((tmp_path / "eval.json").read_text())["warnings"] == result["warnings"]


def test_every_epoch_reads_every_batch_when_accumulation_does_not_divide_the_loader(train_latent, config, cache,
                                                                                     tmp_path, monkeypatch):
    """256 rows in batches of 16: 16 batches per epoch, 3 per optimiser step. accelerate steps at the end of every
    epoch (a last step of 1 batch), so an epoch is 6 steps; counting 18 batches per 6 steps skipped the first 2
    batches of epoch 1 and 1 of epoch 2 (read from the code in issue 22, point 12, and seen here)."""
    read, make = [], train_latent.make_objective

    def set_epoch(self, epoch):  # called by the loop and by accelerate's loader: once per epoch here
        if not read or read[-1][0] != epoch:
            read.append([epoch, 0])
        self.epoch = epoch

    def counting(*args, **kwargs):
        objective = make(*args, **kwargs)
        losses = objective.training_losses

        def training_losses(*a, **k):
            read[-1][1] += 1
            return losses(*a, **k)

        objective.training_losses = training_losses
        return objective

    monkeypatch.setattr(LatentDataset, "set_epoch", set_epoch)
    monkeypatch.setattr(train_latent, "make_objective", counting)
    common = dict(gradient_accumulation_steps=3, log_every=1, validation_steps=100)
    train_latent.main(config(cache, tmp_path / "straight", max_steps=12, checkpointing_steps=100, **common))
    assert read == [[0, 16], [1, 16]]  # every batch of both epochs, none skipped
    # a resume in the middle of epoch 1 continues where the straight run was, to the bit
    train_latent.main(config(cache, tmp_path / "resumed", max_steps=8, checkpointing_steps=8, **common))
    train_latent.main(config(cache, tmp_path / "resumed", max_steps=12, checkpointing_steps=100,
                             resume_from_checkpoint="latest", **common))
    with open(tmp_path / "straight" / "logs" / "loss.csv") as a, open(tmp_path / "resumed" / "logs" / "loss.csv") as b:
        assert a.read() == b.read()
