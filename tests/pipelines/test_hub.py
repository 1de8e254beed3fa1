"""Push -> download -> load against a loopback Hub (tests/hub_server.py), with diffit_hf and with plain diffusers.

huggingface_hub reads HF_ENDPOINT when it is imported, so the Hub side of each test runs in a subprocess with
HF_ENDPOINT pointing at the local server and HF_HUB_OFFLINE unset.
"""

import hashlib
import importlib.util
import json
import math
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import DDPMScheduler
from diffusers.utils.dynamic_modules_utils import get_relative_imports

from diffit_hf import DiffiTModel, DiffiTPipeline, DiffiTUNetModel, DiTModel
from diffit_hf.pipelines import remote_code
from diffit_hf.pipelines.model_card import write_model_card
from diffit_hf.pipelines.push import stage_for_hub
from diffit_hf.pipelines.remote_code import local_view, remote_code_files

from ..hub_server import READ_TOKEN, WRITE_TOKEN, card_meta, start_hub
from ..hub_server import run_and_sample as run_against
from ..tiny import tiny_vae


@pytest.fixture
def hub(tmp_path):
    server, state = start_hub()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


@pytest.fixture
def pipeline_dir(tmp_path, perturb, fmnist_names):
    torch.manual_seed(0)
    model = perturb(DiTModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                             attention_head_dim=8, num_classes=10, learn_sigma=True))
    pipe = DiffiTPipeline(transformer=model, scheduler=DDPMScheduler(variance_type="learned_range"), vae=tiny_vae(),
                          id2label=fmnist_names)
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder)
    return folder


def local_images(folder) -> np.ndarray:
    pipe = DiffiTPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe([7, "Bag"], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_download_load_with_diffit_hf_and_with_plain_diffusers(hub, pipeline_dir, tmp_path):
    endpoint, state = hub
    before = folder_digest(pipeline_dir)
    expected = local_images(pipeline_dir)

    # push, then load the repo with diffit_hf installed (no trust_remote_code needed)
    run_against(endpoint, f"""
        from diffit_hf.pipelines.push import push_to_hub
        from diffit_hf import DiffiTPipeline
        print(push_to_hub({str(pipeline_dir)!r}, "alice/tiny-dit", token={WRITE_TOKEN!r},
                          pipeline_class=DiffiTPipeline))
        pipe = DiffiTPipeline.from_pretrained("alice/tiny-dit")
        assert type(pipe) is DiffiTPipeline, type(pipe)
        assert type(pipe.transformer).__module__ == "diffit_hf.models.transformer_dit", type(pipe.transformer)
        OUT = {str(tmp_path / "with_diffit.npy")!r}
    """, tmp_path)
    files = state.repos["alice/tiny-dit"]["files"]
    for name in ("model_index.json", "pipeline_diffit.py", "transformer/diffit_hf.py", "README.md",
                 "transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "scheduler/scheduler_config.json"):
        assert name in files, sorted(files)
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)  # safetensors only
    assert json.loads(files["model_index.json"])["_class_name"] == ["pipeline_diffit", "DiffiTPipeline"]
    np.testing.assert_array_equal(np.load(tmp_path / "with_diffit.npy"), expected)

    # plain diffusers, diffit_hf not importable: the repo's own code runs
    stdout = run_against(endpoint, f"""
        import inspect
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained("alice/tiny-dit", trust_remote_code=True)
        assert type(pipe).__name__ == "DiffiTPipeline" and "diffit_hf" not in type(pipe).__module__.split(".")[0]
        print("pipeline file:", inspect.getsourcefile(type(pipe)))
        print("model file:", inspect.getsourcefile(type(pipe.transformer)))
        OUT = {str(tmp_path / "plain.npy")!r}
    """, tmp_path, block_diffit=True)
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"), expected)
    # the code that ran is the pipeline bundle and the model bundle, both generated from the package
    ran = dict(re.findall(r"^(pipeline|model) file: (.+)$", stdout, flags=re.MULTILINE))
    assert Path(ran["pipeline"]).name == "pipeline_diffit.py" and Path(ran["model"]).name == "diffit_hf.py", ran
    assert Path(ran["pipeline"]).read_text() == remote_code_files()["pipeline_diffit.py"]
    assert Path(ran["model"]).read_text() == remote_code_files()["transformer/diffit_hf.py"]
    assert folder_digest(pipeline_dir) == before  # the local folder was only read


def test_push_failures_are_clear_and_keep_the_folder(hub, pipeline_dir, tmp_path):
    endpoint, state = hub
    before = folder_digest(pipeline_dir)
    # broken pipelines (no transformer weights; a truncated VAE) must be refused before anything is uploaded
    import shutil

    broken = {}
    for name, damage in (("no-weights", "transformer/diffusion_pytorch_model.safetensors"),
                         ("truncated-vae", "vae/diffusion_pytorch_model.safetensors")):
        shutil.copytree(pipeline_dir, tmp_path / name)
        data = (tmp_path / name / damage).read_bytes()
        if name == "no-weights":
            (tmp_path / name / damage).unlink()
        else:
            (tmp_path / name / damage).write_bytes(data[: len(data) // 3])
        broken[name] = folder_digest(tmp_path / name)
    (tmp_path / "empty").mkdir()  # a folder without model_index.json
    run_against(endpoint, f"""
        import pytest
        from functools import partial
        from diffit_hf import DiffiTPipeline
        from diffit_hf.pipelines import push
        push_to_hub = partial(push.push_to_hub, pipeline_class=DiffiTPipeline)
        folder = {str(pipeline_dir)!r}
        with pytest.raises(PermissionError, match="refused"):
            push_to_hub(folder, "alice/x", token={READ_TOKEN!r})
        with pytest.raises(PermissionError, match="HTTP 401"):
            push_to_hub(folder, "alice/x", token=False)
        push_to_hub(folder, "alice/x", token={WRITE_TOKEN!r})
        with pytest.raises(FileExistsError, match="already exists"):
            push_to_hub(folder, "alice/x", token={WRITE_TOKEN!r}, exist_ok=False)
        with pytest.raises(FileNotFoundError, match="model_index.json"):
            push_to_hub({str(tmp_path / "empty")!r}, "alice/y", token={WRITE_TOKEN!r})
        for name in {list(broken)!r}:
            with pytest.raises(ValueError, match="is not a working pipeline, so nothing was pushed"):
                push_to_hub({str(tmp_path)!r} + "/" + name, "alice/" + name, token={WRITE_TOKEN!r})
        print("ok")
    """, tmp_path)
    for name, digest in broken.items():
        assert f"alice/{name}" not in state.repos and folder_digest(tmp_path / name) == digest
    # server down: a clear ConnectionError
    run_against("http://127.0.0.1:9", f"""
        import pytest
        from diffit_hf import DiffiTPipeline
        from diffit_hf.pipelines.push import push_to_hub
        with pytest.raises(ConnectionError, match="Could not reach the Hub"):
            push_to_hub({str(pipeline_dir)!r}, "alice/z", token={WRITE_TOKEN!r}, pipeline_class=DiffiTPipeline)
    """, tmp_path)
    assert folder_digest(pipeline_dir) == before and "alice/x" in state.repos


EVAL = {"fid": 12.5, "kid": 0.01, "precision": 0.8, "recall": 0.4, "class_consistency": 0.9,
        "extractor": "fmnist-classifier", "reference": "fashion-mnist:test", "num_samples": 5000,
        "config": {"classifier": "outputs/classifier-fmnist"}}


def test_model_card_is_generated_from_the_pipeline(pipeline_dir, tmp_path):
    cache = tmp_path / "latents"
    cache.mkdir()
    (cache / "index.json").write_text(json.dumps({"dataset": "fashion-mnist", "split": "train"}))
    card = write_model_card(pipeline_dir, repo_id="alice/tiny-dit",
                            train_config={"model": "DiT-S/2", "max_steps": 100, "latents": str(cache)},
                            eval_results=EVAL)
    text = card.read_text()
    meta = card_meta(card)
    assert meta["library_name"] == "diffusers" and meta["license"] == "apache-2.0"
    assert meta["pipeline_tag"] == "unconditional-image-generation" and "class-conditional" in text
    assert {"diffit", "dit", "diffusion-transformer", "class-conditional", "DiTModel"} <= set(meta["tags"])
    assert meta["datasets"] == ["zalando-datasets/fashion_mnist"]  # from the cache index, not from a guess
    assert "zalando-datasets/fashion_mnist (train)" in text
    assert "Ankle boot" in text and "DiTModel" in text
    assert 'DiffiTPipeline.from_pretrained("alice/tiny-dit")' in text
    assert 'DiffusionPipeline.from_pretrained("alice/tiny-dit", trust_remote_code=True)' in text
    assert "pip install diffit-hf" not in text and "not on PyPI" in text and "pip install ./diffit_hf" in text
    assert "| max_steps | 100 |" in text
    # model-index through huggingface_hub's EvalResult: every metric names its feature extractor
    results = meta["model-index"][0]["results"]
    names = {m["name"]: m["value"] for r in results for m in r["metrics"]}
    assert names["FID-FMNIST (diffit_hf Fashion-MNIST classifier)"] == 12.5
    assert names["Class consistency (outputs/classifier-fmnist)"] == 0.9
    assert {r["dataset"]["type"] for r in results} == {"zalando-datasets/fashion_mnist"}
    assert {r["dataset"]["split"] for r in results} == {"test"}
    assert "| FID-FMNIST (diffit_hf Fashion-MNIST classifier) | 12.5 |" in text
    inception = write_model_card(pipeline_dir, eval_results={**EVAL, "extractor": "inception-v3-fid"})
    assert "FID (Inception-v3)" in {m["name"] for r in card_meta(inception)["model-index"][0]["results"]
                                    for m in r["metrics"]}
    # a pixel-space run on a local folder: named in the text, never in the metadata
    card = write_model_card(pipeline_dir, train_config={"dataset": str(tmp_path)})
    assert "datasets" not in card_meta(card) and str(tmp_path) in card.read_text()
    card = write_model_card(pipeline_dir, train_config={"dataset": "me/my-images"}, license="mit",
                            source_url="https://example.org/diffit_hf.git")
    meta = card_meta(card)
    assert meta["datasets"] == ["me/my-images"] and meta["license"] == "mit"  # our own weights: the user's choice
    assert "pip install 'diffit-hf @ git+https://example.org/diffit_hf.git'" in card.read_text()


@pytest.mark.parametrize("scheduler, listed", [
    ("FlowMatchEulerDiscreteScheduler", "euler, heun, dpm (samplers of this flow model)"),
    ("EDMEulerScheduler", "euler, dpm, heun (samplers of this edm model)"),
    ("DDPMScheduler", "ddpm, ddim, dpm, euler, heun (samplers of this epsilon model)"),
])
def test_model_card_lists_only_the_schedulers_of_the_models_objective(scheduler, listed, tmp_path):
    import diffusers

    model = DiTModel(sample_size=4, patch_size=2, in_channels=4, num_layers=1, num_attention_heads=2,
                     attention_head_dim=8, num_classes=0, learn_sigma=False)
    DiffiTPipeline(transformer=model, scheduler=getattr(diffusers, scheduler)()).save_pretrained(tmp_path / "pipe")
    line = next(line for line in write_model_card(tmp_path / "pipe").read_text().splitlines()
                if "pipe.use_scheduler(" in line)
    assert line.endswith(f"# or any of {listed}"), line


def test_converted_weights_keep_their_license(pipeline_dir, tmp_path):
    (pipeline_dir / "provenance.json").write_text(json.dumps({"source": "facebookresearch/DiT",
                                                              "base_model": "facebook/DiT-XL-2-256"}))
    meta = card_meta(write_model_card(pipeline_dir))
    assert meta["license"] == "cc-by-nc-4.0" and meta["base_model"] == "facebook/DiT-XL-2-256"
    with pytest.raises(ValueError, match="cannot be published as 'apache-2.0'"):
        write_model_card(pipeline_dir, license="apache-2.0")
    (pipeline_dir / "provenance.json").write_text(json.dumps({"source": "NVlabs/DiffiT"}))
    meta = card_meta(write_model_card(pipeline_dir))
    assert meta["license"] == "other" and meta["license_name"] == "nvidia-source-code-license-nc"
    assert meta["license_link"].startswith("https://github.com/NVlabs/DiffiT")
    (pipeline_dir / "provenance.json").write_text(json.dumps({"source": "somewhere"}))
    with pytest.raises(ValueError, match="known sources are diffit_hf, facebookresearch/DiT, NVlabs/DiffiT"):
        write_model_card(pipeline_dir)
    (pipeline_dir / "provenance.json").unlink()

    # a pipeline built from converted weights carries their provenance into its folder (and so into its card)
    converted = tmp_path / "converted"
    model = DiffiTPipeline.from_pretrained(pipeline_dir).transformer
    model.save_pretrained(converted)
    (converted / "provenance.json").write_text(json.dumps({"source": "facebookresearch/DiT"}))
    pipe = DiffiTPipeline.from_pretrained(pipeline_dir, transformer=DiTModel.from_pretrained(converted))
    pipe.save_pretrained(tmp_path / "from-converted")
    assert card_meta(write_model_card(tmp_path / "from-converted"))["license"] == "cc-by-nc-4.0"
    # and so do weights converted in memory (convert_diffusers_dit / convert_official_dit mark their result)
    from diffusers import DiTTransformer2DModel

    from diffit_hf import convert_diffusers_dit

    diffusers_dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                          num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=10)
    pipe = DiffiTPipeline(transformer=convert_diffusers_dit(diffusers_dit), scheduler=pipe.scheduler, vae=pipe.vae)
    pipe.save_pretrained(tmp_path / "converted-in-memory")
    card = write_model_card(tmp_path / "converted-in-memory")
    meta = card_meta(card)
    assert meta["license"] == "cc-by-nc-4.0" and "base_model" not in meta
    # class-conditional without class names: the snippets ask for ids
    assert "class-conditional" in meta["tags"] and "pipe([0, 1], guidance_scale=4.0" in card.read_text()


def test_pipeline_push_to_hub_and_save_pretrained_push_load_with_plain_diffusers(hub, pipeline_dir, tmp_path):
    """diffusers' own spellings, `pipe.push_to_hub` and `save_pretrained(push_to_hub=True)`, go through the staging
    (remote code, card, verification, errors); the pushed repos and a local save_pretrained folder load with plain
    diffusers while diffit_hf cannot be imported, and the card's usage snippets run as written."""
    endpoint, state = hub
    expected = local_images(pipeline_dir)
    (pipeline_dir / "eval.json").write_text(json.dumps(EVAL))
    saved = tmp_path / "saved"
    run_against(endpoint, f"""
        import pytest
        from diffit_hf import DiffiTPipeline
        pipe = DiffiTPipeline.from_pretrained({str(pipeline_dir)!r})
        with pytest.raises(PermissionError, match="refused"):
            pipe.push_to_hub("alice/denied", token={READ_TOKEN!r})
        print(pipe.push_to_hub("alice/by-method", token={WRITE_TOKEN!r}, license="mit"))
        pipe.save_pretrained({str(saved)!r}, push_to_hub=True, repo_id="alice/by-save", token={WRITE_TOKEN!r})
        with pytest.raises(FileExistsError, match="already exists"):
            pipe.push_to_hub("alice/by-method", token={WRITE_TOKEN!r}, exist_ok=False)
    """, tmp_path)
    assert "alice/denied" not in state.repos
    for repo in ("alice/by-method", "alice/by-save"):
        files = state.repos[repo]["files"]
        assert {"pipeline_diffit.py", "transformer/diffit_hf.py", "README.md"} <= set(files), sorted(files)
        assert json.loads(files["model_index.json"])["_class_name"] == ["pipeline_diffit", "DiffiTPipeline"]
        assert files["transformer/diffit_hf.py"].decode() == remote_code_files()["transformer/diffit_hf.py"]
    assert card_meta_text(state.repos["alice/by-method"]["files"]["README.md"])["license"] == "mit"
    # the local folder save_pretrained wrote holds the generated code too
    for path, source in remote_code_files().items():
        assert (saved / path).read_text() == source

    plain_snippet, diffit_snippet = re.findall(r"```python\n(.*?)```",
                                               state.repos["alice/by-save"]["files"]["README.md"].decode(), re.S)
    assert "DiffusionPipeline" in plain_snippet and "DiffiTPipeline" in diffit_snippet
    outputs = {name: str(tmp_path / f"{name}.npy") for name in ("by_method", "by_save", "local")}
    run_against(endpoint, textwrap.dedent(f"""
        import numpy as np, torch
        from diffusers import DiffusionPipeline
        for name, source in (("by_method", "alice/by-method"), ("by_save", "alice/by-save"),
                             ("local", {str(saved)!r})):
            pipe = DiffusionPipeline.from_pretrained(source, trust_remote_code=True)
            assert type(pipe).__name__ == "DiffiTPipeline" and not type(pipe).__module__.startswith("diffit_hf")
            pipe.set_progress_bar_config(disable=True)
            images = pipe([7, "Bag"], num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                          output_type="np").images
            np.save({outputs!r}[name], images)
    """) + "\n" + plain_snippet, tmp_path / "plain", block_diffit=True)
    for name in outputs:
        np.testing.assert_array_equal(np.load(outputs[name]), expected, err_msg=name)
    assert (tmp_path / "plain" / "sample.png").is_file()  # the card's plain-diffusers snippet ran as written
    run_against(endpoint, diffit_snippet, tmp_path / "diffit")
    assert (tmp_path / "diffit" / "sample.png").is_file()  # and the diffit_hf one


def card_meta_text(data: bytes) -> dict:
    return yaml.safe_load(data.decode().split("---")[1])


def load_bundle(source: str, tmp_path: Path, monkeypatch):
    """Imports the generated model bundle as a module of its own (not through diffit_hf)."""
    path = tmp_path / "diffit_hf_bundle.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("diffit_hf_bundle", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "diffit_hf_bundle", module)
    spec.loader.exec_module(module)
    return module


BUNDLE_CASES = [
    (DiTModel, dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                    attention_head_dim=8, num_classes=10)),
    (DiffiTModel, dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                       attention_head_dim=8, num_classes=10, window_size=2)),
    (DiffiTUNetModel, dict(sample_size=16, in_channels=3, block_out_channels=(32, 64), layers_per_block=(1, 2),
                           window_size=4, attention_head_dim=16, norm_num_groups=8, num_classes=10)),
]


def test_remote_code_bundle_computes_what_the_package_computes(tmp_path, monkeypatch, perturb):
    bundle_source = remote_code_files()["transformer/diffit_hf.py"]
    imported = re.findall(r"^\s*(?:from|import)\s+(\S+)", bundle_source, flags=re.MULTILINE)
    assert not [name for name in imported if name.split(".")[0] in ("diffit_hf", "")], imported
    bundle = load_bundle(bundle_source, tmp_path, monkeypatch)
    for installed_cls, config in BUNDLE_CASES:
        bundled_cls = getattr(bundle, installed_cls.__name__)
        assert bundled_cls is not installed_cls and bundled_cls.__module__ == "diffit_hf_bundle"
        installed = perturb(installed_cls(**config, learn_sigma=True))
        bundled = bundled_cls(**config, learn_sigma=True).eval()
        bundled.load_state_dict(installed.state_dict())
        size = config["sample_size"]
        x = torch.randn(2, config["in_channels"], size, size)
        t, y = torch.tensor([3, 700]), torch.tensor([1, 10])
        with torch.no_grad():
            assert torch.equal(bundled(x, t, y).sample, installed(x, t, y).sample), installed_cls.__name__


def test_pipeline_module_runs_as_remote_code(tmp_path):
    # diffusers downloads every `from .x import` of a remote module as a repo file, and requires every absolute
    # import to be installed: the shipped pipeline file may import neither its siblings nor diffit_hf with a statement
    source_file = tmp_path / "pipeline_diffit.py"
    source_file.write_text(remote_code_files()["pipeline_diffit.py"])
    assert get_relative_imports(str(source_file)) == []
    imported = re.findall(r"^\s*(?:from|import)\s+(\S+)", source_file.read_text(), flags=re.MULTILINE)
    assert "diffit_hf" not in [name.split(".")[0] for name in imported], imported
    # the shipped class is the pipeline without the installed package's Hub I/O (diffusers' own saving and loading)
    assert "class DiffiTPipeline(DiffusionPipeline):" in source_file.read_text()


def test_bundler_refuses_code_the_remote_module_could_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(remote_code, "PACKAGE_DIR", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mixin.py").write_text("class Mixin:\n    pass\n\n\nHELPER = 1\n")
    (tmp_path / "pkg" / "base.py").write_text("import math\n\nSCALE = math.pi\n")
    (tmp_path / "pkg" / "pipe.py").write_text(
        "from .base import SCALE\nfrom .mixin import Mixin\n\n\nclass Pipe(Mixin, dict):\n"
        "    \"\"\"A pipe.\"\"\"\n\n    scale = SCALE\n")
    bundle = remote_code.bundle_modules("pkg", ("base", "pipe"), "Test", installed_only=("mixin",))
    namespace = {}
    exec(compile(bundle, "bundle.py", "exec"), namespace)
    assert namespace["Pipe"].__bases__ == (dict,) and namespace["Pipe"].scale == math.pi
    with pytest.raises(ValueError, match="imports .base, which is not bundled before it"):
        remote_code.bundle_modules("pkg", ("pipe", "base"), "Test", installed_only=("mixin",))
    (tmp_path / "pkg" / "pipe.py").write_text("from .base import SCALE\nfrom .mixin import HELPER\n\nX = HELPER\n")
    with pytest.raises(ValueError, match="uses HELPER, which live in mixin"):
        remote_code.bundle_modules("pkg", ("base", "pipe"), "Test", installed_only=("mixin",))
    (tmp_path / "pkg" / "pipe.py").write_text("SCALE = 2\n")
    with pytest.raises(ValueError, match="'SCALE' is defined in both base.py and pipe.py"):
        remote_code.bundle_modules("pkg", ("base", "pipe"), "Test")


def test_staging_writes_code_and_card_and_only_reads_the_folder(pipeline_dir, tmp_path):
    before = folder_digest(pipeline_dir)
    (pipeline_dir / "train_config.json").write_text(json.dumps({"model": "DiT-S/2", "max_steps": 7}))
    staged = stage_for_hub(pipeline_dir, tmp_path / "staged", repo_id="alice/tiny")
    assert not (pipeline_dir / "README.md").exists()  # the local folder is only read
    for path, source in remote_code_files().items():
        assert (staged / path).read_text() == source
    card = (staged / "README.md").read_text()
    assert 'from_pretrained("alice/tiny")' in card and "| max_steps | 7 |" in card
    (pipeline_dir / "train_config.json").unlink()
    assert folder_digest(pipeline_dir) == before


def test_local_view_loads_a_pushed_folder_with_the_installed_classes(pipeline_dir, tmp_path):
    expected = local_images(pipeline_dir)
    staged = stage_for_hub(pipeline_dir, tmp_path / "staged")
    (staged / "transformer" / "diffit_hf.py").write_text("raise RuntimeError('remote code ran')\n")
    (staged / "pipeline_diffit.py").write_text("raise RuntimeError('remote code ran')\n")
    before = folder_digest(staged)

    with local_view(staged) as view:
        index = json.loads((Path(view) / "model_index.json").read_text())
        assert index["_class_name"] == "DiffiTPipeline"
        assert index["transformer"] == ["diffit_hf.models.transformer_dit", "DiTModel"]
        assert not list(Path(view).rglob("*.py"))
    assert not Path(view).exists()
    # save_pretrained writes the same format (remote code included); a folder in diffusers' plain format (written
    # before that, or by hand) is loaded as it is
    assert json.loads((pipeline_dir / "model_index.json").read_text())["_class_name"] == ["pipeline_diffit",
                                                                                         "DiffiTPipeline"]
    plain = tmp_path / "plain-format"
    shutil.copytree(pipeline_dir, plain)
    index = json.loads((plain / "model_index.json").read_text())
    index.update(_class_name="DiffiTPipeline", transformer=["diffit_hf.models.transformer_dit", "DiTModel"])
    (plain / "model_index.json").write_text(json.dumps(index))
    with local_view(plain) as view:
        assert view == str(plain)
    np.testing.assert_array_equal(local_images(plain), expected)

    pipe = DiffiTPipeline.from_pretrained(staged)
    assert type(pipe.transformer) is DiTModel
    pipe.set_progress_bar_config(disable=True)
    images = pipe([7, "Bag"], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    np.testing.assert_array_equal(images.images, expected)
    assert folder_digest(staged) == before

    index = json.loads((staged / "model_index.json").read_text())
    index["transformer"] = ["diffit_hf", "UViTModel"]
    (staged / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="'UViTModel', which this diffit_hf does not have"):
        DiffiTPipeline.from_pretrained(staged)
