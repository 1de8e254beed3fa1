"""`pipelines/push_to_hub.py --space` against a loopback Hub (tests/hub_server.py): the Space's files (app, pinned
requirements, card), and the Space's app run as a Space runs it, without diffit_hf, on the pushed model repo.

huggingface_hub reads HF_ENDPOINT when it is imported, so the Hub side runs in subprocesses."""

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers.utils import make_image_grid

from diffit_hf import DiffiTPipeline
from diffit_hf.pipelines.schedules import SCHEDULERS
from diffit_hf.pipelines.space import SPACE_REQUIREMENTS

from ..hub_server import READ_TOKEN, WRITE_TOKEN, run_against, start_hub
from ..tiny import save_tiny_pixel_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub():
    server, state = start_hub()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def third_party_imports(source: str) -> set[str]:
    """Top-level packages a module imports, less the standard library and relative imports."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_space_push_holds_a_runnable_gradio_app_for_the_model(hub, tmp_path):
    endpoint, state = hub
    pipe_dir = save_tiny_pixel_pipeline(tmp_path / "pipe")
    run_against(endpoint, f"""
        import runpy, sys
        import pytest
        sys.argv = ["push_to_hub.py", "--folder", {str(pipe_dir)!r}, "--repo-id", "alice/tiny-dit",
                    "--token", {WRITE_TOKEN!r}, "--space", "alice/tiny-dit-demo"]
        runpy.run_path({str(ROOT / "pipelines" / "push_to_hub.py")!r}, run_name="__main__")

        from diffit_hf.pipelines.space import push_space
        with pytest.raises(ValueError, match="alice/nothing .* holds no pipeline pushed by diffit_hf"):
            push_space("alice/other-demo", "alice/nothing", token={WRITE_TOKEN!r})
        with pytest.raises(PermissionError, match="HTTP 403"):
            push_space("alice/other-demo", "alice/tiny-dit", token={READ_TOKEN!r})
    """, tmp_path)
    assert "alice/other-demo" not in state.spaces  # refused pushes create nothing

    # the files of the Space
    space = state.spaces["alice/tiny-dit-demo"]
    assert space["sdk"] == "gradio"
    files = space["files"]
    assert sorted(files) == ["README.md", "app.py", "requirements.txt"]
    assert files["app.py"] == (ROOT / "pipelines" / "app.py").read_bytes()
    pins = dict(line.split("==") for line in files["requirements.txt"].decode().split())
    assert pins == {name: importlib.metadata.version(name).split("+")[0] for name in SPACE_REQUIREMENTS}
    # everything the app and the model repo's code import is pinned (gradio comes with the SDK; diffit_hf is optional)
    model_files = state.repos["alice/tiny-dit"]["files"]
    sources = [files["app.py"]] + [data for name, data in model_files.items() if name.endswith(".py")]
    imported = set().union(*(third_party_imports(s.decode()) for s in sources)) - {"gradio", "diffit_hf"}
    distributions = importlib.metadata.packages_distributions()
    assert {normalized(distributions[m][0]) for m in imported} <= {normalized(n) for n in pins}, imported
    front, body = re.fullmatch(r"---\n(.*?)\n---\n(.*)", files["README.md"].decode(), re.S).groups()
    card = yaml.safe_load(front)
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py"
    assert card["sdk_version"] == importlib.metadata.version("gradio")
    assert card["models"] == ["alice/tiny-dit"]
    assert "/alice/tiny-dit)" in body

    # run the Space's app as a Space does: its files only, no diffit_hf, no --model (the card names the model)
    run_against(endpoint, f"""
        import sys
        import numpy as np
        from huggingface_hub import snapshot_download
        folder = snapshot_download("alice/tiny-dit-demo", repo_type="space", local_dir="space")
        sys.path.insert(0, folder)
        import app
        args = app.parse_args([])
        assert args.model == "alice/tiny-dit", args.model
        sampler = app.AppSampler(app.load_pipeline(args.model, "cpu"), out_dir="grids")
        assert type(sampler.pipe).__module__.split(".")[0] != "diffit_hf", type(sampler.pipe).__module__
        assert sampler.schedulers == {["saved", *SCHEDULERS]!r}, sampler.schedulers
        grid, path, message = sampler.generate(["Bag", "Sneaker"], steps=3, seed=5, per_class=2)
        assert grid is not None, message
        np.save("space_grid.npy", np.asarray(grid))
        app.build_demo(sampler)  # the page builds on the repo's pipeline class
    """, tmp_path, block_diffit=True)
    reference = DiffiTPipeline.from_pretrained(pipe_dir)
    reference.set_progress_bar_config(disable=True)
    images = reference(["Bag", "Sneaker"], num_images_per_label=2, guidance_scale=4.0, num_inference_steps=3,
                       generator=torch.Generator().manual_seed(5)).images
    np.testing.assert_array_equal(np.load(tmp_path / "space_grid.npy"),
                                  np.asarray(make_image_grid(images, rows=2, cols=2)))
