"""Push -> download -> load against a loopback Hub (tests/hub_server.py), with diffit_hf and with plain diffusers.

huggingface_hub reads HF_ENDPOINT when it is imported, so the Hub side of each test runs in a subprocess with
HF_ENDPOINT pointing at the local server and HF_HUB_OFFLINE unset.
"""

import hashlib
import importlib.util
import json
import os
import re
import subprocess
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
from diffit_hf.pipelines import pipeline_diffit
from diffit_hf.pipelines.hub import local_view, remote_code_files, stage_for_hub, write_model_card

from ..hub_server import READ_TOKEN, WRITE_TOKEN, start_hub
from ..tiny import tiny_vae

BLOCK_DIFFIT = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "diffit_hf" or name.startswith("diffit_hf."):
            raise ImportError("diffit_hf is not installed here")
sys.meta_path.insert(0, _Block())
"""

GENERATE = """
import numpy as np, torch
pipe.set_progress_bar_config(disable=True)
images = pipe([7, "Bag"], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
np.save(OUT, images)
"""


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


def run_against(endpoint: str, code: str, tmp_path: Path, block_diffit: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", DIFFUSERS_VERBOSITY="error")
    script = (BLOCK_DIFFIT if block_diffit else "") + textwrap.dedent(code) + (GENERATE if "OUT =" in code else "")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def folder_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_download_load_with_diffit_hf_and_with_plain_diffusers(hub, pipeline_dir, tmp_path):
    endpoint, state = hub
    before = folder_digest(pipeline_dir)
    expected = local_images(pipeline_dir)

    # push, then load the repo with diffit_hf installed (no trust_remote_code needed)
    run_against(endpoint, f"""
        from diffit_hf.pipelines.hub import push_to_hub
        from diffit_hf import DiffiTPipeline
        print(push_to_hub({str(pipeline_dir)!r}, "alice/tiny-dit", token={WRITE_TOKEN!r}))
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
    # the code that ran is the package's pipeline module, verbatim, and the model bundle generated from the package
    ran = dict(re.findall(r"^(pipeline|model) file: (.+)$", stdout, flags=re.MULTILINE))
    assert Path(ran["pipeline"]).name == "pipeline_diffit.py" and Path(ran["model"]).name == "diffit_hf.py", ran
    assert Path(ran["pipeline"]).read_text() == Path(pipeline_diffit.__file__).read_text()
    assert Path(ran["model"]).read_text() == remote_code_files()["transformer/diffit_hf.py"]
    assert folder_digest(pipeline_dir) == before  # the local folder was only read


def test_push_failures_are_clear_and_keep_the_folder(hub, pipeline_dir, tmp_path):
    endpoint, state = hub
    before = folder_digest(pipeline_dir)
    run_against(endpoint, f"""
        import pytest
        from diffit_hf.pipelines.hub import push_to_hub
        folder = {str(pipeline_dir)!r}
        with pytest.raises(PermissionError, match="refused"):
            push_to_hub(folder, "alice/x", token={READ_TOKEN!r})
        with pytest.raises(PermissionError, match="HTTP 401"):
            push_to_hub(folder, "alice/x", token=False)
        push_to_hub(folder, "alice/x", token={WRITE_TOKEN!r})
        with pytest.raises(FileExistsError, match="already exists"):
            push_to_hub(folder, "alice/x", token={WRITE_TOKEN!r}, exist_ok=False)
        with pytest.raises(FileNotFoundError, match="model_index.json"):
            push_to_hub({str(tmp_path)!r}, "alice/y", token={WRITE_TOKEN!r})
        print("ok")
    """, tmp_path)
    # server down: a clear ConnectionError
    run_against("http://127.0.0.1:9", f"""
        import pytest
        from diffit_hf.pipelines.hub import push_to_hub
        with pytest.raises(ConnectionError, match="Could not reach the Hub"):
            push_to_hub({str(pipeline_dir)!r}, "alice/z", token={WRITE_TOKEN!r})
    """, tmp_path)
    assert folder_digest(pipeline_dir) == before
    # a broken pipeline (no transformer weights; a truncated VAE) is refused before anything is uploaded
    import shutil

    for name, damage in (("no-weights", "transformer/diffusion_pytorch_model.safetensors"),
                         ("truncated-vae", "vae/diffusion_pytorch_model.safetensors")):
        broken = tmp_path / name
        shutil.copytree(pipeline_dir, broken)
        data = (broken / damage).read_bytes()
        if name == "no-weights":
            (broken / damage).unlink()
        else:
            (broken / damage).write_bytes(data[: len(data) // 3])
        kept = folder_digest(broken)
        run_against(endpoint, f"""
            import pytest
            from diffit_hf.pipelines.hub import push_to_hub
            with pytest.raises(ValueError, match="is not a working pipeline, so nothing was pushed"):
                push_to_hub({str(broken)!r}, "alice/{name}", token={WRITE_TOKEN!r})
        """, tmp_path)
        assert f"alice/{name}" not in state.repos and folder_digest(broken) == kept


def test_model_card_is_generated_from_the_pipeline(pipeline_dir):
    card = write_model_card(pipeline_dir, repo_id="alice/tiny-dit", train_config={"model": "DiT-S/2",
                                                                                  "max_steps": 100},
                            eval_results={"fid_fmnist": 12.5})
    text = card.read_text()
    meta = yaml.safe_load(text.split("---")[1])
    assert meta["library_name"] == "diffusers" and meta["license"] == "apache-2.0"
    assert {"diffit", "dit", "diffusion-transformer", "class-conditional"} <= set(meta["tags"])
    assert "Ankle boot" in text and "DiTModel" in text
    assert 'DiffiTPipeline.from_pretrained("alice/tiny-dit")' in text
    assert 'DiffusionPipeline.from_pretrained("alice/tiny-dit", trust_remote_code=True)' in text
    assert "| max_steps | 100 |" in text and "| fid_fmnist | 12.5 |" in text


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


def test_pipeline_module_runs_as_remote_code():
    # diffusers downloads every `from .x import` of a remote module as a repo file, and requires every absolute
    # import to be installed: the pipeline file may import neither its siblings nor diffit_hf with a statement
    source_file = Path(pipeline_diffit.__file__)
    assert get_relative_imports(str(source_file)) == []
    imported = re.findall(r"^\s*(?:from|import)\s+(\S+)", source_file.read_text(), flags=re.MULTILINE)
    assert "diffit_hf" not in [name.split(".")[0] for name in imported], imported


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
    with local_view(pipeline_dir) as view:  # a save_pretrained folder is loaded as it is
        assert view == str(pipeline_dir)

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
