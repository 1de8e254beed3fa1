"""Fine-tuning: `init_from_pretrained` / `train_latent.py --init-from` from saved models, pipeline folders, official
DiT checkpoints and Hub ids; another class count rebuilds the label table keeping the null row."""

import pytest
import torch

from diffit_hf import DiffiTModel
from diffit_hf.models.presets import create_model_for_data
from diffit_hf.training.init_weights import LABEL_TABLE, init_from_pretrained
from diffit_hf.training.objectives import make_objective
from diffit_hf.utils import mix_seed

from ..models.reference_dit import ReferenceDiT
from ..tiny import TINY, trained


def batch(classes=10):
    torch.manual_seed(0)
    return torch.randn(6, 4, 8, 8), torch.randint(0, classes, (6,))


def loss(model, x, y):
    torch.manual_seed(mix_seed(0, 3))
    return make_objective("epsilon", True).training_losses(model, x, y)["loss"]


@pytest.mark.parametrize("name", ["DiT-S/2", "DiffiT-S/2"])
def test_a_saved_model_or_pipeline_folder_reproduces_its_loss(name, tmp_path):
    source = trained(name).eval()
    source.save_pretrained(tmp_path / "model")
    (tmp_path / "pipe").mkdir()
    source.save_pretrained(tmp_path / "pipe" / "transformer")
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    x, y = batch()
    for folder in ("model", "pipe"):
        fresh = create_model_for_data(name, (4, 8, 8), 10, **TINY).eval()
        assert not torch.equal(loss(fresh, x, y), loss(source, x, y))
        assert init_from_pretrained(fresh, str(tmp_path / folder), log=lambda _: None) == []
        assert torch.equal(loss(fresh, x, y), loss(source, x, y))


def test_another_class_count_rebuilds_the_label_table_keeping_the_null_row(tmp_path):
    source = trained(classes=10)
    source.save_pretrained(tmp_path / "model")
    messages = []
    fresh = create_model_for_data("DiT-S/2", (4, 8, 8), 3, **TINY)
    initial = fresh.state_dict()[LABEL_TABLE].clone()
    assert init_from_pretrained(fresh, str(tmp_path / "model"), log=messages.append) == [LABEL_TABLE]
    table, old = fresh.state_dict()[LABEL_TABLE], source.state_dict()[LABEL_TABLE]
    assert table.shape == (4, 16) and torch.equal(table[3], old[10])  # the null row keeps its meaning
    assert torch.equal(table[:3], initial[:3])  # the class rows are freshly initialised
    assert "re-initialised: cond_embed.class_embedder.weight (rows 0-2 for 3 classes, the source had 10" in \
        messages[0]
    # the unconditional prediction (null label) is the source's, exactly
    x, _ = batch()
    t = torch.tensor([3, 50, 500, 999, 10, 0])
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x, t, torch.full((6,), 3)).sample,
                                   source.eval()(x, t, torch.full((6,), 10)).sample, rtol=0, atol=0)
    # an unconditional run drops the table, and says so
    uncond = create_model_for_data("DiT-S/2", (4, 8, 8), 0, **TINY)
    init_from_pretrained(uncond, str(tmp_path / "model"), log=messages.append)
    assert "not used (unconditional run): cond_embed.class_embedder.weight" in messages[-1]


def test_an_official_dit_checkpoint_loads_through_the_converter(tmp_path):
    ref = ReferenceDiT(8, 2, 4, 16, 2, 2, 10, True).eval()
    torch.save({"model": {}, "ema": ref.state_dict()}, tmp_path / "DiT-tiny.pt")
    model = create_model_for_data("DiT-S/2", (4, 8, 8), 10, **TINY).eval()
    init_from_pretrained(model, str(tmp_path / "DiT-tiny.pt"), log=lambda _: None)
    x, y = batch()
    t = torch.tensor([0, 17, 499, 999, 5, 6])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y).sample, ref(x, t, y), atol=1e-5, rtol=1e-5)


def test_another_architecture_and_missing_sources_are_refused(tmp_path):
    trained().save_pretrained(tmp_path / "dit")
    with pytest.raises(ValueError, match="holds another architecture: missing .*Pick the matching --model"):
        init_from_pretrained(create_model_for_data("DiffiT-S/2", (4, 8, 8), 10, **TINY), str(tmp_path / "dit"))
    with pytest.raises(ValueError, match="holds another architecture.*num_layers"):
        init_from_pretrained(create_model_for_data("DiT-S/2", (4, 8, 8), 10, **{**TINY, "num_layers": 3}),
                             str(tmp_path / "dit"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        init_from_pretrained(trained(), str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="Hub has no such model reachable here"):  # offline in the tests
        init_from_pretrained(trained(), "someone/no-such-dit")
    assert isinstance(trained("DiffiT-S/2"), DiffiTModel)


def test_fine_tuned_weights_keep_their_sources_license(tmp_path, fmnist_names):
    """Weights fine-tuned from facebookresearch/DiT (or a folder converted from it or from NVIDIA's DiffiT) are
    exported with that source's non-commercial license, never as apache-2.0 weights trained here."""
    from diffusers import DDPMScheduler

    from diffit_hf.pipelines.model_card import PROVENANCE
    from diffit_hf.training.export import export_pipeline
    from diffit_hf.training.init_weights import source_provenance

    torch.save({}, tmp_path / "DiT-tiny.pt")
    trained().save_pretrained(tmp_path / "ours" / "transformer")
    (tmp_path / "nvidia").mkdir()
    (tmp_path / "nvidia" / PROVENANCE).write_text('{"source": "NVlabs/DiffiT", "base_model": null}')
    assert source_provenance(str(tmp_path / "DiT-tiny.pt"))["source"] == "facebookresearch/DiT"
    assert source_provenance(str(tmp_path / "nvidia"))["source"] == "NVlabs/DiffiT"
    assert source_provenance(str(tmp_path / "ours" / "transformer")) == {"source": "diffit_hf", "base_model": None}

    provenance = {"source": "facebookresearch/DiT", "base_model": "facebook/DiT-XL-2-256"}
    export_pipeline(tmp_path / "run", trained(), None, DDPMScheduler(), id2label=fmnist_names, provenance=provenance)
    card = (tmp_path / "run" / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "base_model: facebook/DiT-XL-2-256" in card
    assert "apache-2.0" not in card.split("---")[1]  # the metadata block
    export_pipeline(tmp_path / "scratch", trained(), None, DDPMScheduler(), id2label=fmnist_names)
    assert "license: apache-2.0" in (tmp_path / "scratch" / "README.md").read_text()


def test_train_latent_refuses_another_license_for_fine_tuned_dit_weights(script, tmp_path):
    from diffit_hf.training.config import make_config

    train_latent = script("training/train_latent.py")
    torch.save({}, tmp_path / "DiT-tiny.pt")
    cfg = make_config(train_latent.TrainConfig, {"init_from": str(tmp_path / "DiT-tiny.pt"),
                                                 "hub_license": "apache-2.0", "output_dir": str(tmp_path / "run")})
    with pytest.raises(ValueError, match="cannot be published as 'apache-2.0'"):
        train_latent.check_config(cfg)
    assert not (tmp_path / "run").exists()
