"""Push a saved DiffiTPipeline folder to the Hub, with a generated model card and the remote code plain diffusers
needs (the local folder is only read).

    python pipelines/push_to_hub.py --folder outputs/dit-fmnist --repo-id you/dit-fashion-mnist [--private] \
        [--license mit] [--source-url https://github.com/you/diffit_hf] [--space you/dit-fashion-mnist-demo]

Afterwards both load: `DiffiTPipeline.from_pretrained(repo_id)` (diffit_hf installed) and
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` (plain diffusers). `--space` also creates a
Gradio Space that serves the model in the browser (pipelines/app.py, `diffit_hf.pipelines.space.push_space`);
without `--folder` it pushes only the Space, for a model already pushed to `--repo-id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers.utils.logging import get_logger

from diffit_hf import DiffiTPipeline
from diffit_hf.pipelines.push import push_to_hub
from diffit_hf.pipelines.space import push_space
from diffit_hf.training.config import parse_config

logger = get_logger("diffit_hf.push_to_hub")  # shown by parse_config (show_library_logs)


@dataclass
class PushConfig:
    """Push a saved DiffiTPipeline folder to the Hub (see pipelines/push_to_hub.py)."""

    folder: str | None = field(default=None, metadata={
        "help": "a folder written by DiffiTPipeline.save_pretrained (required unless --space)"})
    repo_id: str | None = field(default=None, metadata={"help": "the Hub repo, e.g. you/dit-fashion-mnist (required)"})
    token: str | None = field(default=None, metadata={"help": "default: the token of `hf auth login`"})
    private: bool = field(default=False, metadata={"help": "create the repo private"})
    exist_ok: bool = field(default=True, metadata={"help": "push into an existing repo (--no-exist-ok: fail)"})
    license: str | None = field(default=None, metadata={
        "help": "the card's license; default by source: apache-2.0 for weights trained with diffit_hf, the "
                "source's non-commercial license for converted weights (which cannot be changed)"})
    base_model: str | None = field(default=None, metadata={"help": "the Hub model this one was fine-tuned from"})
    source_url: str | None = field(default=None, metadata={"help": "git URL of diffit_hf for the card's install line"})
    space: str | None = field(default=None, metadata={
        "help": "also create this Gradio Space (e.g. you/dit-demo) serving --repo-id in the browser"})

    def __post_init__(self):
        if self.folder is None and self.space is None:
            raise ValueError("--folder is required: a folder written by DiffiTPipeline.save_pretrained (or --space "
                             "alone, for a model already pushed to --repo-id).")
        if self.repo_id is None:
            raise ValueError("--repo-id is required: the Hub repo to push to, e.g. you/dit-fashion-mnist.")


def main(cfg: PushConfig) -> str:
    """Returns the URL of the model repo, or of the Space with `--space`."""
    url = None
    if cfg.folder is not None:
        url = push_to_hub(cfg.folder, cfg.repo_id, token=cfg.token, private=cfg.private, exist_ok=cfg.exist_ok,
                          license=cfg.license, base_model=cfg.base_model, source_url=cfg.source_url,
                          pipeline_class=DiffiTPipeline)
        logger.info(f"pushed {cfg.folder} to {url}")
    if cfg.space is not None:
        url = push_space(cfg.space, cfg.repo_id, token=cfg.token, private=cfg.private, exist_ok=cfg.exist_ok)
        logger.info(f"pushed the Space {cfg.space} (serving {cfg.repo_id}) to {url}")
    return url


if __name__ == "__main__":
    main(parse_config(PushConfig))
