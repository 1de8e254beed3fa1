"""A Hub Space that serves a pushed model in the browser: `pipelines/app.py` with pinned requirements and a card.

A pushed Space holds:

    app.py             pipelines/app.py, verbatim: without diffit_hf it loads the model repo's own code with plain
                       diffusers (`trust_remote_code=True`) and serves the model that its card lists
    requirements.txt   what the app and the model repo's code import, pinned to the versions installed here
                       (gradio itself comes from the card's `sdk_version`)
    README.md          the Space card: `sdk: gradio`, `sdk_version`, `app_file: app.py`, `models: [model repo]`
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
import tempfile
from pathlib import Path

from .push import push_errors

# pipelines/app.py of the diffit_hf checkout this package runs from (the project installs from source)
APP_FILE = Path(__file__).resolve().parents[2] / "pipelines" / "app.py"
# what app.py imports (gradio aside) and what the model repo's remote code imports, as distributions
SPACE_REQUIREMENTS = ("torch", "diffusers", "huggingface_hub", "safetensors", "numpy")


def pinned_requirements(names: tuple[str, ...] = SPACE_REQUIREMENTS) -> str:
    """`name==version` lines of the installed distributions (a local build tag such as torch's `+cpu` dropped)."""
    return "".join(f"{name}=={importlib.metadata.version(name).split('+')[0]}\n" for name in names)


def installed_gradio() -> str:
    """The installed gradio version: the `sdk_version` a Space gets, so that it runs the gradio tested here."""
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError as err:
        raise ValueError("gradio is not installed, and a Space runs the gradio version its card names: install the "
                         "app extra (pip install -e '.[app]') or pass gradio_version.") from err


def write_space_card(folder: str | Path, space_id: str, model_id: str, gradio_version: str) -> Path:
    """`folder/README.md`: the Space's front matter (gradio SDK and version, app file, Python, the model) and a line
    that points at the model repo."""
    from huggingface_hub import SpaceCardData, constants

    data = SpaceCardData(title=space_id.split("/")[-1], sdk="gradio", sdk_version=gradio_version, app_file="app.py",
                         python_version=f"{sys.version_info.major}.{sys.version_info.minor}", models=[model_id],
                         tags=["diffit_hf", "diffusion-transformer"], emoji="🎨", colorFrom="indigo",
                         colorTo="gray", pinned=False)
    text = (f"---\n{data.to_yaml()}\n---\n\n# {space_id.split('/')[-1]}\n\n"
            f"Try [{model_id}]({constants.ENDPOINT}/{model_id}) in the browser: pick classes by name, guidance, "
            "steps, scheduler and seed, and download the grid. The app is diffit_hf's `pipelines/app.py`; it loads "
            "the model with plain diffusers and the model repo's own code (`trust_remote_code=True`).\n")
    path = Path(folder) / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def stage_space(folder: str | Path, space_id: str, model_id: str, app_file: str | Path = APP_FILE,
                gradio_version: str | None = None) -> Path:
    """Writes the Space's files (app.py, requirements.txt, README.md) into `folder`; returns it."""
    app_file = Path(app_file)
    if not app_file.is_file():
        raise FileNotFoundError(f"No app at {app_file}: a Space ships diffit_hf's pipelines/app.py; pass app_file= "
                                "(the path of pipelines/app.py in a diffit_hf checkout).")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(app_file, folder / "app.py")
    (folder / "requirements.txt").write_text(pinned_requirements())
    write_space_card(folder, space_id, model_id, gradio_version or installed_gradio())
    return folder


def push_space(
    space_id: str,
    model_id: str,
    token: str | None = None,
    private: bool = False,
    exist_ok: bool = True,
    commit_message: str | None = None,
    app_file: str | Path = APP_FILE,
    gradio_version: str | None = None,
) -> str:
    """Creates (or updates) the Gradio Space `space_id` that serves the pushed model repo `model_id`; returns its
    URL. The model repo must hold a pipeline pushed by diffit_hf (its `pipeline_diffit.py`), which the Space loads
    without diffit_hf; a `ValueError` otherwise. Errors as `diffit_hf.pipelines.push.push_to_hub`."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="diffit-space-") as tmp:
        staging = stage_space(Path(tmp) / "space", space_id, model_id, app_file, gradio_version)
        with push_errors(api, space_id):
            if not api.file_exists(model_id, "pipeline_diffit.py"):
                raise ValueError(f"{model_id} on {api.endpoint} holds no pipeline pushed by diffit_hf (no "
                                 "pipeline_diffit.py), so a Space could not load it: push the pipeline first "
                                 f"(pipelines/push_to_hub.py --folder PIPELINE --repo-id {model_id}).")
            url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private,
                                  exist_ok=exist_ok)
            api.upload_folder(repo_id=space_id, repo_type="space", folder_path=str(staging),
                              commit_message=commit_message or f"Gradio app for {model_id} (diffit_hf)")
    return str(url)
