"""Pushing a saved pipeline folder to the Hub: staged with its remote code and model card, verified with the
pipeline class before anything is uploaded, the Hub's refusals turned into clear errors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .model_card import write_model_card
from .remote_code import add_remote_code

EXCLUDED_FROM_PUSH = ("checkpoints", "logs", "samples")  # training state stays local


def stage_for_hub(folder: str | Path, staging: str | Path, repo_id: str | None = None, **card_kwargs: Any) -> Path:
    """Copies a pipeline folder into `staging` with the remote code (`add_remote_code`) and a model card
    (`write_model_card(staging, repo_id, **card_kwargs)`, from the folder's train_config.json and eval.json when
    present); `folder` is only read."""
    folder, staging = Path(folder), Path(staging)
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json); run save_pretrained first.")
    shutil.copytree(folder, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*EXCLUDED_FROM_PUSH))
    add_remote_code(staging)
    write_model_card(staging, repo_id=repo_id, **card_kwargs)
    return staging


def verify_pipeline(folder: str | Path, pipeline_class: type) -> None:
    """Loads the pipeline in `folder` with `pipeline_class` (`DiffiTPipeline`: the installed classes) and runs one
    tiny sampling step (one image, its first class); `ValueError` naming the folder and the reason if any part is
    missing or broken."""
    try:
        pipe = pipeline_class.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        labels = [0] if pipe.num_classes else None
        pipe(labels, num_inference_steps=1, guidance_scale=1.0, output_type="np")
    except Exception as err:  # any failure means the pipeline would reach the Hub broken
        raise ValueError(f"{folder} is not a working pipeline, so nothing was pushed: {type(err).__name__}: "
                         f"{err}") from err


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    exist_ok: bool = True,
    commit_message: str | None = None,
    license: str | None = None,
    base_model: str | None = None,
    source_url: str | None = None,
    *,
    pipeline_class: type,
) -> str:
    """Uploads a saved pipeline folder (weights, configs, sample grid, model card, remote code); returns the URL.

    The folder is copied to a staging directory first, so a failed push never modifies or loses it, and the staged
    pipeline must load and sample with `pipeline_class` (`verify_pipeline`; `DiffiTPipeline`) before anything is
    uploaded. Errors: a broken pipeline -> `ValueError`; an unreachable endpoint -> `ConnectionError`; 401/403 ->
    `PermissionError`; `exist_ok=False` and an existing repo -> `FileExistsError`. `license`, `base_model`,
    `source_url`: see `write_model_card`.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="diffit-push-") as tmp:
        staging = stage_for_hub(folder, Path(tmp) / "repo", repo_id=repo_id, license=license, base_model=base_model,
                                source_url=source_url)
        verify_pipeline(staging, pipeline_class)  # nothing is uploaded unless the staged pipeline loads and samples
        with push_errors(api, repo_id):
            url = api.create_repo(repo_id, private=private, exist_ok=exist_ok, repo_type="model")
            api.upload_folder(repo_id=repo_id, folder_path=str(staging),
                              commit_message=commit_message or "Upload DiffiTPipeline with diffit_hf")
    return str(url)


@contextmanager
def push_errors(api, repo_id: str) -> Iterator[None]:
    """The Hub's refusals of a push as clear errors: 401/403 -> `PermissionError`, 409 (the repo exists) ->
    `FileExistsError`, an unreachable endpoint -> `ConnectionError`."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise PermissionError(f"The Hub refused the push to {repo_id} (HTTP {status}): log in with "
                                  f"`hf auth login` or pass a token with write access.") from err
        if status == 409:
            raise FileExistsError(f"{repo_id} already exists; pass exist_ok=True to push a new commit.") from err
        raise
    except _transport_errors() as err:
        raise ConnectionError(f"Could not reach the Hub at {api.endpoint} to push {repo_id}: {err}") from err


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub version uses (httpx2, httpx)."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
