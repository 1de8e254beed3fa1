"""Fine-tuning: initialise a freshly built model from pretrained weights (`train_latent.py --init-from`).

Sources: a `save_pretrained` model folder, a pipeline folder (its `transformer/`), an official facebookresearch/DiT
checkpoint (`.pt`, converted with `convert_official_dit`), or a Hub repo id of either folder kind. Every tensor of
the model must come from the source with the same shape, except the class-label table: with another number of
classes it is rebuilt, the class rows freshly initialised and the null row (label `num_classes`, "no class", used by
classifier-free guidance) copied from the source's null row, so that the unconditional prediction keeps its meaning.
The positional table is no weight (computed from the sample size), so a new resolution loads too. Every other config
key must match the source's, even where the tensors' shapes do (another head split, window size, block type).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.models.modeling_utils import ModelMixin

LABEL_TABLE = "cond_embed.class_embedder.weight"  # (num_classes + 1, D): the last row is the null class
_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")
# config keys a fine-tuned model may change: the class count, the resolution (the positional table is computed),
# the label dropout of training and the init-only options; every other key changes what the loaded weights compute
FINE_TUNING_MAY_CHANGE = {"num_classes", "sample_size", "class_dropout_prob", "zero_init_residual", "class_embed_std"}


def _folder_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The weights and config of a save_pretrained folder (a pipeline folder: its `transformer/`)."""
    from safetensors.torch import load_file

    if (folder / "model_index.json").is_file():
        folder = folder / "transformer"
    if not (folder / "config.json").is_file():
        raise ValueError(f"--init-from {folder}: no config.json there; pass a saved model folder, a pipeline folder, "
                         "an official DiT checkpoint (.pt) or a Hub repo id.")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"--init-from {folder}: no safetensors weights there.")
    state = {k: v for f in files for k, v in load_file(str(f)).items()}
    return state, json.loads((folder / "config.json").read_text())


def _official_state_dict(path: Path, model: ModelMixin) -> tuple[dict[str, torch.Tensor], dict]:
    """An official DiT checkpoint converted to our keys, as a `DiTModel` of the run's architecture with the
    checkpoint's class count and sample size."""
    from ..models.conversion import convert_official_dit, load_checkpoint_file

    state = load_checkpoint_file(path, "--init-from")
    state = state.get("ema", state)
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    rows = state.get("y_embedder.embedding_table.weight")
    config["num_classes"] = 0 if rows is None else rows.shape[0] - 1
    if "pos_embed" in state:  # (1, T, D): the checkpoint's resolution
        side = int(round((state["pos_embed"].shape[1]) ** 0.5))
        config["sample_size"] = side * config["patch_size"]
    converted = convert_official_dit(state, config)
    return converted.state_dict(), dict(converted.config)


def _hub_folder(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "transformer/*"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ValueError(f"--init-from {repo_id!r} is no local folder or file, and the Hub has no such model "
                         f"reachable here ({type(err).__name__}): pass a saved model folder, a pipeline folder or an "
                         "official DiT checkpoint (.pt), or download the repo first.") from err


def source_provenance(source: str) -> dict:
    """Where the weights of `--init-from SOURCE` come from, for the fine-tuned model's card (`provenance.json`):
    fine-tuned weights keep their source's license (an official DiT checkpoint: facebookresearch/DiT, CC BY-NC 4.0;
    a folder converted from it, or from NVIDIA's DiffiT, says so in its provenance.json) and name a Hub source as
    their `base_model`."""
    from ..pipelines.model_card import read_provenance

    path = Path(source).expanduser()
    if path.is_file():  # an official DiT checkpoint
        return {"source": "facebookresearch/DiT", "base_model": None}
    if path.is_dir():  # a model folder (a pipeline's `transformer/`: the pipeline folder holds the provenance)
        folder = path.parent if path.name == "transformer" and not (path / "transformer").is_dir() else path
        base_model = None
    else:  # a Hub id: its snapshot, and the repo as the base model
        folder, base_model = _hub_folder(source), source
    provenance = read_provenance(folder)
    return {**provenance, "base_model": base_model or provenance.get("base_model")}


def load_source(source: str, model: ModelMixin) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict in our keys, its model config) of `--init-from SOURCE`."""
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in (".pt", ".pth"):
            raise ValueError(f"--init-from {source}: a file must be an official DiT checkpoint (.pt); pass a "
                             "save_pretrained folder for our models.")
        return _official_state_dict(path, model)
    if path.is_dir():
        return _folder_state_dict(path)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"--init-from {source}: no such file or folder (and it is not a Hub id 'owner/name').")
    return _folder_state_dict(_hub_folder(source))


def _rebuilt_label_table(ours: torch.Tensor, theirs: torch.Tensor) -> torch.Tensor:
    """Our (K + 1, D) table: class rows as initialised, the null row (the last) copied from `theirs`."""
    table = ours.clone()
    table[-1] = theirs[-1]
    return table


def init_from_pretrained(model: ModelMixin, source: str, log=print) -> list[str]:
    """Loads the weights of `source` (see the module docstring) into `model`, in place; returns the names of the
    tensors re-initialised (the label table when the class count differs) and tells the user through `log`.
    `ValueError` naming the tensors if the architectures differ otherwise."""
    state, config = load_source(source, model)
    ours = model.state_dict()
    reinit, dropped = [], []
    if LABEL_TABLE in ours and LABEL_TABLE in state and ours[LABEL_TABLE].shape != state[LABEL_TABLE].shape \
            and ours[LABEL_TABLE].shape[1:] == state[LABEL_TABLE].shape[1:]:
        state[LABEL_TABLE] = _rebuilt_label_table(ours[LABEL_TABLE], state[LABEL_TABLE])
        reinit.append(f"{LABEL_TABLE} (rows 0-{ours[LABEL_TABLE].shape[0] - 2} for {ours[LABEL_TABLE].shape[0] - 1} "
                      f"classes, the source had {config.get('num_classes')}; the null row is kept)")
    elif LABEL_TABLE in ours and LABEL_TABLE not in state:  # an unconditional source, a conditional run
        state[LABEL_TABLE] = ours[LABEL_TABLE]
        reinit.append(f"{LABEL_TABLE} (the source is unconditional: every row, the null row too)")
    elif LABEL_TABLE in state and LABEL_TABLE not in ours:  # a conditional source, an unconditional run
        dropped.append(LABEL_TABLE)
        state.pop(LABEL_TABLE)
    missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if ours[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        differ = {k: (config.get(k), v) for k, v in dict(model.config).items()
                  if not k.startswith("_") and k in config and config.get(k) != v and k != "num_classes"}
        shapes = [f"{k}: source {tuple(state[k].shape)}, model {tuple(ours[k].shape)}" for k in wrong[:5]]
        raise ValueError(
            f"--init-from {source} holds another architecture: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"other shapes {shapes}; config differences (source, this run): {differ}. Pick the matching --model "
            "and --model-config (only the class count may differ)."
        )
    changed = {k: (config[k], v) for k, v in dict(model.config).items()
               if not k.startswith("_") and k not in FINE_TUNING_MAY_CHANGE and k in config and config[k] != v}
    if changed:  # the same shapes computing something else, e.g. 2 heads of 16 -> 4 heads of 8
        pairs = "; ".join(f"{k}: source {a!r}, this run {b!r}" for k, (a, b) in changed.items())
        raise ValueError(
            f"--init-from {source} was trained with another model config ({pairs}): its tensors fit, but these keys "
            f"change what they compute. Pass the source's values with --model / --model-config (only "
            f"{', '.join(sorted(FINE_TUNING_MAY_CHANGE))} may differ)."
        )
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()}, strict=True)
    log(f"initialised {type(model).__name__} from {source}"
        + (f"; re-initialised: {', '.join(reinit)}" if reinit else "; every tensor loaded")
        + (f"; not used (unconditional run): {', '.join(dropped)}" if dropped else ""))
    return [r.split(" ")[0] for r in reinit]
