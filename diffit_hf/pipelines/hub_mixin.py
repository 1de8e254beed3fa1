"""The Hub I/O of the installed `DiffiTPipeline`: loading, saving and pushing in the format that also loads with
plain diffusers (`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`).

`DiffiTPipeline` takes these methods from `DiffiTHubMixin`; the remote code a pushed repo ships leaves the mixin out
(`diffit_hf.pipelines.remote_code`), so that class saves, loads and pushes as any diffusers pipeline does.
"""

from __future__ import annotations

import os
import tempfile

from diffusers.schedulers import EDMEulerScheduler

from .model_card import carry_provenance
from .push import push_to_hub as push_folder_to_hub
from .remote_code import DOWNLOAD_KWARGS, add_remote_code, local_view
from .schedules import EDMHeunScheduler


class DiffiTHubMixin:
    """`from_pretrained`, `save_pretrained` and `push_to_hub` of a `DiffusionPipeline` subclass (listed before
    `DiffusionPipeline` among its bases): pushed repos carry remote code and a model card, and are verified with the
    pipeline's own class before anything is uploaded."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Loads a saved pipeline folder or Hub repo id (all of diffusers' `from_pretrained` arguments apply).

        Repos pushed by diffit_hf also ship remote code for plain diffusers
        (`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`); called on this class, that code is
        ignored and the installed diffit_hf classes are used (`diffit_hf.pipelines.remote_code.local_view`), without
        `trust_remote_code`.
        """
        if kwargs.get("trust_remote_code"):
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        download = {key: kwargs.pop(key) for key in DOWNLOAD_KWARGS if key in kwargs}
        with local_view(pretrained_model_name_or_path, cls.__name__, **download) as folder:
            return super().from_pretrained(folder, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True,
                        variant: str | None = None, max_shard_size: int | str | None = None, push_to_hub: bool = False,
                        **kwargs):
        r"""
        Saves the pipeline as diffusers does, plus the remote code that lets plain diffusers load the folder
        (`DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)`), generated from this package
        (see `diffit_hf.pipelines.remote_code.add_remote_code`). `push_to_hub=True` then pushes the folder with
        `diffit_hf.pipelines.push.push_to_hub` (model card, verification; `repo_id`, `token`, `private`,
        `commit_message`, `license` and `exist_ok` are taken from `kwargs`), as `DiffiTPipeline.push_to_hub` does.
        """
        scheduler = self.scheduler
        if isinstance(scheduler, EDMHeunScheduler):  # saved as the EDM Euler config it extends, for plain diffusers
            self.scheduler = EDMEulerScheduler.from_config(scheduler.config)
        try:
            super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                    max_shard_size=max_shard_size)
        finally:
            self.scheduler = scheduler
        add_remote_code(save_directory)
        carry_provenance(self.transformer, save_directory)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            options = {key: kwargs.pop(key) for key in ("token", "exist_ok", "commit_message", "license")
                       if key in kwargs}
            return push_folder_to_hub(save_directory, repo_id, pipeline_class=type(self),
                                      private=bool(kwargs.pop("private", False)), **options)

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, create_pr: bool = False, safe_serialization: bool = True,
                    variant: str | None = None, **kwargs) -> str:
        r"""
        Uploads the pipeline with its remote code and a generated model card, after checking that it loads and
        samples (see `diffit_hf.pipelines.push.push_to_hub`: the same staging and errors as
        `pipelines/push_to_hub.py`). Returns the repo URL.

        Examples:

        ```py
        pipe.push_to_hub("you/dit-fashion-mnist", license="apache-2.0")
        # then, anywhere with plain diffusers:
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained("you/dit-fashion-mnist", trust_remote_code=True)
        ```
        """
        if create_pr:
            raise ValueError("create_pr=True is not supported by DiffiTPipeline.push_to_hub; push to a branch-free "
                             "repo or open the pull request on the Hub.")
        with tempfile.TemporaryDirectory(prefix="diffit-save-") as folder:
            self.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)
            return push_folder_to_hub(folder, repo_id, pipeline_class=type(self), token=token, private=bool(private),
                                      commit_message=commit_message, **kwargs)
