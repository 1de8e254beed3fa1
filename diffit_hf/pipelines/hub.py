"""The Hub: generated model cards, and pushes that load with diffit_hf installed *and* with plain diffusers.

A pushed repo holds the pipeline folder plus the remote code plain diffusers needs (generated here from the
package's own modules at push time, never kept as a second copy):

    model_index.json           "_class_name": ["pipeline_diffit", "DiffiTPipeline"], "transformer": ["diffit_hf",
                               "DiTModel"] (the local folder keeps "DiffiTPipeline" and the full module path)
    pipeline_diffit.py         this package's pipeline module, verbatim
    transformer/diffit_hf.py   this package's model modules as one file (diffusers looks for
                               `<component>/<library>.py` before importing the library)
    README.md                  the model card

`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` runs that code; `DiffiTPipeline.from_pretrained`
ignores it and loads the installed package's classes through `local_view`, which reads this format back.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..models import DiffiTModel, DiffiTUNetModel, DiTModel
from ..utils import atomic_write_json, atomic_write_text

REMOTE_PIPELINE_MODULE = "pipeline_diffit"
REMOTE_MODEL_LIBRARY = "diffit_hf"
# model modules in dependency order; each may import the earlier ones only
MODEL_MODULES = ("validation", "embeddings", "layers", "transformer_dit", "transformer_diffit", "unet_diffit")
EXCLUDED_FROM_PUSH = ("checkpoints", "logs", "samples")  # training state stays local
# the classes a pushed model_index.json may name as ["diffit_hf", class name]
MODEL_CLASSES = {cls.__name__: cls for cls in (DiTModel, DiffiTModel, DiffiTUNetModel)}
# `from_pretrained` arguments that only concern the download of a Hub repo
DOWNLOAD_KWARGS = ("revision", "token", "cache_dir", "force_download", "local_files_only", "proxies")


#################################################################################
#                 The pushed format: remote code, staging, read-back            #
#################################################################################


def remote_code_files() -> dict[str, str]:
    """{repo path: source} of the code a plain-diffusers load needs, generated from this package's modules."""
    from . import pipeline_diffit

    models_dir = Path(__file__).resolve().parents[1] / "models"
    imports, bodies = [], []
    for name in MODEL_MODULES:
        source = (models_dir / f"{name}.py").read_text()
        lines = source.splitlines()
        drop = set()
        for node in ast.parse(source).body:  # top-level imports move to the bundle's header
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                span = range(node.lineno - 1, node.end_lineno)
                drop.update(span)
                relative = isinstance(node, ast.ImportFrom) and (node.level > 0 or node.module == "__future__")
                if not relative:  # relative imports name things that live in this same file now
                    imports.append("\n".join(lines[i] for i in span))
        kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip()
        bodies.append(f"# ---- diffit_hf/models/{name}.py ----\n{kept}\n")
    header = ('"""DiT / DiffiT models from diffit_hf (generated at push time; edit the package, not this file)."""'
              "\n\nfrom __future__ import annotations\n\n")
    bundle = header + "\n".join(dict.fromkeys(imports)) + "\n\n\n" + "\n\n".join(bodies)
    return {
        f"{REMOTE_PIPELINE_MODULE}.py": Path(pipeline_diffit.__file__).read_text(),
        f"transformer/{REMOTE_MODEL_LIBRARY}.py": bundle,
    }


def add_remote_code(folder: str | Path) -> Path:
    """Turns a `save_pretrained` pipeline folder, in place, into the format plain diffusers loads with
    `trust_remote_code=True`: model_index.json names `["pipeline_diffit", "DiffiTPipeline"]` and
    `["diffit_hf", <model class>]`, and the code files of `remote_code_files` are (re)written from this package.
    Idempotent; `DiffiTPipeline.from_pretrained` reads the result back through `local_view`."""
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved pipeline (no model_index.json); run save_pretrained first.")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") not in ("DiffiTPipeline", [REMOTE_PIPELINE_MODULE, "DiffiTPipeline"]):
        raise ValueError(f"{folder} holds a {index.get('_class_name')!r}, not a DiffiTPipeline.")
    index["_class_name"] = [REMOTE_PIPELINE_MODULE, "DiffiTPipeline"]
    for name, entry in index.items():  # ["diffit_hf.models.transformer_dit", "DiTModel"] -> ["diffit_hf", ...]
        if isinstance(entry, list) and len(entry) == 2 and str(entry[0]).split(".")[0] == REMOTE_MODEL_LIBRARY:
            if name != "transformer":
                raise ValueError(f"Component {name!r} is a diffit_hf class; only the transformer can ship as code.")
            if entry[1] not in MODEL_CLASSES:
                raise ValueError(f"{entry[1]!r} is not one of the model classes that ship as code: "
                                 f"{', '.join(MODEL_CLASSES)}.")
            index[name] = [REMOTE_MODEL_LIBRARY, entry[1]]
    atomic_write_json(index_path, index)
    for path, source in remote_code_files().items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / path, source)
    return folder


def carry_provenance(transformer, folder: str | Path) -> None:
    """Writes where converted weights come from into the pipeline folder, so that its card keeps the source's license
    and base model: the `provenance` a converter set on `transformer` (`convert_official_dit`,
    `convert_diffusers_dit`), or the `provenance.json` of the folder it was loaded from (pipelines/convert_dit.py)."""
    provenance = getattr(transformer, "provenance", None)
    origin = Path(str(transformer.config.get("_name_or_path") or ""))
    if provenance is None and origin.name and (origin / PROVENANCE).is_file():
        provenance = json.loads((origin / PROVENANCE).read_text())
    if provenance is not None:
        atomic_write_json(Path(folder) / PROVENANCE, provenance)


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


@contextmanager
def local_view(
    pretrained_model_name_or_path: str | os.PathLike,
    pipeline_class_name: str = "DiffiTPipeline",
    **download_kwargs: Any,
) -> Iterator[str]:
    """Yields a folder that `DiffusionPipeline.from_pretrained` loads with the installed diffit_hf classes.

    A Hub repo id is downloaded first (`download_kwargs`: see `DOWNLOAD_KWARGS`), without its code. A folder in the
    pushed format (`stage_for_hub`) is shown through a temporary view of symlinks whose model_index.json names
    `pipeline_class_name` and the installed model classes instead of the remote code; any other folder is yielded
    as it is. The folder itself is only read.
    """
    path = str(pretrained_model_name_or_path)
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download

        path = snapshot_download(path, ignore_patterns=["*.py", "*.bin", "*.ckpt"], **download_kwargs)
    try:
        index = json.loads((Path(path) / "model_index.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} has no readable model_index.json ({err}): it is not a saved pipeline.") from err
    for name, entry in index.items():  # every component the index lists must be there, named if it is not
        if not name.startswith("_") and isinstance(entry, list) and entry[0] is not None:
            if not (Path(path) / name / ("scheduler_config.json" if name == "scheduler" else "config.json")).is_file():
                raise FileNotFoundError(f"{path} lacks its '{name}' component (model_index.json lists "
                                        f"{entry[1]} in {name}/): restore that folder or save the pipeline again.")
    if not isinstance(index.get("_class_name"), list):  # a save_pretrained folder: diffusers reads it as it is
        yield path
        return
    index["_class_name"] = pipeline_class_name
    for name, entry in index.items():  # ["diffit_hf", "DiTModel"] -> ["diffit_hf.models.transformer_dit", "DiTModel"]
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == REMOTE_MODEL_LIBRARY:
            if entry[1] not in MODEL_CLASSES:
                raise ValueError(f"{path} names the model class {entry[1]!r}, which this diffit_hf does not have; "
                                 f"it has {', '.join(MODEL_CLASSES)}.")
            index[name] = [MODEL_CLASSES[entry[1]].__module__, entry[1]]
    with tempfile.TemporaryDirectory(prefix="diffit-view-") as view:
        for item in Path(path).iterdir():  # everything but the index and the remote code, one folder deep
            if item.name == "model_index.json" or item.suffix == ".py":
                continue
            if item.is_dir():
                (Path(view) / item.name).mkdir()
                for sub in item.iterdir():
                    if sub.suffix != ".py":
                        (Path(view) / item.name / sub.name).symlink_to(sub.resolve())
            else:
                (Path(view) / item.name).symlink_to(item.resolve())
        (Path(view) / "model_index.json").write_text(json.dumps(index))
        yield view


#################################################################################
#                                   Model card                                  #
#################################################################################

# Where the weights come from -> the license fields of their card. Weights trained with diffit_hf are the user's
# (apache-2.0 unless they choose otherwise); converted weights keep their source's non-commercial license.
LICENSES = {
    "diffit_hf": {"license": "apache-2.0"},
    "facebookresearch/DiT": {"license": "cc-by-nc-4.0"},
    "NVlabs/DiffiT": {"license": "other", "license_name": "nvidia-source-code-license-nc",
                      "license_link": "https://github.com/NVlabs/DiffiT/blob/main/LICENSE"},
}
# written next to converted weights (pipelines/convert_dit.py) and carried into the pipeline folders made from them
PROVENANCE = "provenance.json"
# short dataset names of diffit_hf.data -> their Hub dataset ids (the card's `datasets` metadata)
HUB_DATASET_IDS = {"fashion-mnist": "zalando-datasets/fashion_mnist"}
SOURCE_INSTALL = "pip install 'diffit-hf @ git+{url}'"
LOCAL_INSTALL = "git clone <the diffit_hf repository> diffit_hf && pip install ./diffit_hf"

CARD_TEMPLATE = """\
---
{{ card_data }}
---

# {{ title }}

{{ "A class-conditional" if conditional else "An unconditional" }} diffusion transformer ({{ model_class }},
{{ params }} parameters){% if source != "diffit_hf" %} converted from {{ source }}{% if base_model %}
(`{{ base_model }}`){% endif %}{% else %} trained with diffit_hf{% endif %}
{% if dataset %} on {{ dataset }}{% endif %}. It denoises
{{ space }} of shape {{ shape }}{% if vae %} decoded by the bundled `AutoencoderKL`{% endif %}.
{% if conditional %}It is tagged `unconditional-image-generation` because the Hub has no class-conditional image
generation task, the closest one; it generates the classes you ask for.
{% endif %}
{% if classes %}**Classes** ({{ classes | length }}): {{ classes | join(", ") }}.
{% elif conditional %}**Classes**: {{ num_classes }} (ids 0 to {{ num_classes - 1 }}; no class names were saved).
{% endif %}
{% if grid %}![samples]({{ grid }})
{% endif %}
**License**: {{ license_text }}.

## Usage

With plain diffusers (the repo ships its code):

```python
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{{ repo_id }}", trust_remote_code=True)
images = pipe({{ example_labels }}, guidance_scale=4.0, num_inference_steps=25).images
images[0].save("sample.png")
```

With diffit_hf (not on PyPI; install it from source: `{{ install }}`):

```python
from diffit_hf import DiffiTPipeline

pipe = DiffiTPipeline.from_pretrained("{{ repo_id }}")
pipe.use_scheduler("dpm")  # or any of {{ scheduler_names }} (samplers of this {{ prediction_type }} model)
images = pipe({{ example_labels }}, guidance_scale=4.0, num_inference_steps=25).images
images[0].save("sample.png")
```

## Model

| | |
|---|---|
{% for key, value in model_rows %}| {{ key }} | {{ value }} |
{% endfor %}
{% if train_rows %}
## Training

| | |
|---|---|
{% for key, value in train_rows %}| {{ key }} | {{ value }} |
{% endfor %}{% endif %}
{% if eval_rows %}
## Evaluation

| metric | value | feature extractor | reference |
|---|---:|---|---|
{% for name, value, extractor, ref in eval_rows %}| {{ name }} | {{ value }} | {{ extractor }} | {{ ref }} |
{% endfor %}{% endif %}
## Limitations

{{ limitations }}
"""

TRAIN_KEYS = ("model", "model_config", "objective", "latents", "dataset", "max_steps", "batch_size",
              "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "weight_decay", "mixed_precision",
              "ema_decay", "ema_warmup", "class_dropout_prob", "seed")
# eval.json keys -> (metric type, whether the value depends on the feature extractor)
EVAL_METRICS = {"fid": ("fid", True), "kid": ("kid", True), "precision": ("precision", True),
                "recall": ("recall", True), "class_consistency": ("accuracy", False)}
EXTRACTOR_NAMES = {"fmnist-classifier": ("FID-FMNIST", "diffit_hf Fashion-MNIST classifier"),
                   "inception-v3-fid": ("FID", "Inception-v3")}


def read_provenance(folder: str | Path) -> dict[str, Any]:
    """Where a pipeline's weights come from: `folder/provenance.json` or `folder/transformer/provenance.json`
    (`{"source": ..., "base_model": ...}`); `{"source": "diffit_hf"}` when neither exists."""
    for path in (Path(folder) / PROVENANCE, Path(folder) / "transformer" / PROVENANCE):
        if path.is_file():
            provenance = json.loads(path.read_text())
            if provenance.get("source") not in LICENSES:
                raise ValueError(f"{path} names the source {provenance.get('source')!r}; known sources are "
                                 f"{', '.join(LICENSES)}.")
            return provenance
    return {"source": "diffit_hf"}


def license_fields(source: str, license: str | None = None) -> dict[str, str]:
    """The card's `license` (and `license_name` / `license_link`) for weights from `source` (a key of `LICENSES`).
    `license` overrides the default only for weights trained with diffit_hf: converted weights keep their source's
    license (a `ValueError` otherwise)."""
    if source not in LICENSES:
        raise ValueError(f"Unknown weights source {source!r}; valid choices are {', '.join(LICENSES)}.")
    default = LICENSES[source]
    if license is None or license == default["license"]:
        return dict(default)
    if source != "diffit_hf":
        raise ValueError(f"Weights converted from {source} are under {default.get('license_name', default['license'])}"
                         f" (non-commercial); they cannot be published as {license!r}.")
    return {"license": license}


def card_datasets(train_config: dict[str, Any]) -> list[dict[str, Any]]:
    """The datasets a run trained on, as `{"id": Hub id or None, "name": ..., "split": ...}`: from the latent cache's
    index (recorded at encode time) or the pixel-space `dataset` field of the training config."""
    found = []
    latents = train_config.get("latents")
    index = Path(latents) / "index.json" if latents else None
    if index is not None and index.is_file():
        meta = json.loads(index.read_text())
        if meta.get("dataset"):
            found.append({"name": meta["dataset"], "split": meta.get("split", "train"),
                          "id": meta.get("dataset_id") or HUB_DATASET_IDS.get(meta["dataset"])})
    elif train_config.get("dataset"):
        name = str(train_config["dataset"])
        found.append({"name": name, "split": "train", "id": HUB_DATASET_IDS.get(name)})
    for item in found:  # a local folder is named in the text, but only Hub ids go into the metadata
        if item["id"] is None and re.fullmatch(r"[\w.-]+/[\w.-]+", item["name"]) and not Path(item["name"]).exists():
            item["id"] = item["name"]
    return found


def card_eval_results(eval_results: dict[str, Any], model_name: str, dataset: dict[str, Any] | None):
    """`huggingface_hub.EvalResult`s of an eval.json (training/evaluate.py), each metric named with its feature
    extractor ("FID (Inception-v3)" vs "FID-FMNIST (diffit_hf Fashion-MNIST classifier)"), and table rows."""
    from huggingface_hub import EvalResult

    extractor = eval_results.get("extractor", "")
    short, long = EXTRACTOR_NAMES.get(extractor, ("FID", extractor or "unknown extractor"))
    reference = str(eval_results.get("reference", ""))
    ref_name, _, ref_split = reference.partition(":")
    ref_id = HUB_DATASET_IDS.get(ref_name, ref_name) or (dataset or {}).get("id") or "unknown"
    results, rows = [], []
    for key, (metric_type, by_extractor) in EVAL_METRICS.items():
        if not isinstance(eval_results.get(key), (int, float)):
            continue
        label = {"fid": short, "kid": "KID", "precision": "Precision", "recall": "Recall",
                 "class_consistency": "Class consistency"}[key]
        classifier = (eval_results.get("config") or {}).get("classifier") or "classifier"
        name = f"{label} ({long})" if by_extractor else f"{label} ({classifier})"
        value = float(eval_results[key])
        results.append(EvalResult(task_type="unconditional-image-generation", dataset_type=ref_id,
                                  dataset_name=ref_name or ref_id, dataset_split=ref_split or None,
                                  metric_type=metric_type, metric_name=name, metric_value=round(value, 6),
                                  metric_config=f"{eval_results.get('num_samples', '?')} samples"))
        rows.append((name, f"{value:.4g}", long if by_extractor else f"{classifier} logits", reference))
    return results, rows


def write_model_card(
    folder: str | Path,
    repo_id: str | None = None,
    train_config: dict[str, Any] | None = None,
    eval_results: dict[str, float] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    source_url: str | None = None,
) -> Path:
    """Generates `folder/README.md` from the saved pipeline (and the training config / evaluation, if given).

    Metadata (`huggingface_hub.ModelCardData`): `library_name: diffusers`, `pipeline_tag`, tags, the license of the
    weights' source (`read_provenance`; `license` may change it only for weights trained with diffit_hf), `datasets`
    (from the latent cache index or the pixel-space dataset), `base_model` (converted weights; or given) and a
    `model-index` of the evaluation (`EvalResult`s naming their feature extractor). `train_config` and
    `eval_results` default to `folder/train_config.json` and `folder/eval.json`; the sample grid is
    `folder/samples.png` if present. `source_url`: a git URL for the install line.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .pipeline_diffit import schedulers_for

    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    config = json.loads((folder / "transformer" / "config.json").read_text())
    prediction_type = index.get("prediction_type") or "epsilon"
    id2label = {int(k): v for k, v in (index.get("id2label") or {}).items()}
    classes = [id2label[k] for k in sorted(id2label)]
    num_classes = int(config.get("num_classes") or 0)
    conditional = num_classes > 0
    if eval_results is None and (folder / "eval.json").exists():
        eval_results = json.loads((folder / "eval.json").read_text())
    if train_config is None and (folder / "train_config.json").exists():
        train_config = json.loads((folder / "train_config.json").read_text())
    train_config = train_config or {}
    provenance = read_provenance(folder)
    source = provenance["source"]
    licensing = license_fields(source, license)
    base_model = base_model or provenance.get("base_model")
    found = card_datasets(train_config) or provenance.get("datasets", [])
    if datasets is None:
        datasets = [d["id"] for d in found if d["id"]]
    from safetensors import safe_open

    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    params = 0
    if weights.exists():
        with safe_open(str(weights), framework="pt") as f:
            params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    size = config.get("sample_size")
    height, width = (size, size) if isinstance(size, int) else size
    shape = f"{config.get('in_channels')}x{height}x{width}"
    title = repo_id.split("/")[-1] if repo_id else config.get("_class_name", "diffit_hf model")
    evals, eval_rows = card_eval_results(eval_results or {}, title, found[0] if found else None)
    card_data = ModelCardData(
        library_name="diffusers", pipeline_tag="unconditional-image-generation", base_model=base_model,
        datasets=datasets or None, model_name=title if evals else None, eval_results=evals or None,
        tags=["diffit_hf", "diffusion-transformer", "dit", "diffit", config.get("_class_name", "DiTModel"),
              "class-conditional" if conditional else "unconditional", "diffusers:DiffiTPipeline"],
        **licensing,
    )
    license_text = {"diffit_hf": f"{licensing['license']} (weights trained with diffit_hf)",
                    "facebookresearch/DiT": "CC BY-NC 4.0, as the facebookresearch/DiT weights it was converted from "
                                            "(non-commercial use only)",
                    "NVlabs/DiffiT": "NVIDIA Source Code License-NC, as the NVlabs/DiffiT weights it was converted "
                                     "from (non-commercial use only)"}[source]
    dataset_text = ", ".join(f"{d['id'] or d['name']} ({d['split']})" for d in found) or ", ".join(datasets or [])
    card = ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE, title=title, model_class=config.get("_class_name"),
        params=f"{params:,}", dataset=dataset_text, source=source, base_model=base_model,
        space="VAE latents" if index.get("vae", [None])[0] else "pixels", shape=shape,
        vae=bool(index.get("vae", [None])[0]), classes=classes, conditional=conditional, num_classes=num_classes,
        grid="samples.png" if (folder / "samples.png").exists() else None, license_text=license_text,
        repo_id=repo_id or str(folder), prediction_type=prediction_type,
        scheduler_names=", ".join(schedulers_for(prediction_type)),
        example_labels=repr(classes[:2]) if classes else (repr(list(range(min(2, num_classes)))) if conditional
                                                          else "None"),
        install=SOURCE_INSTALL.format(url=source_url) if source_url else LOCAL_INSTALL,
        model_rows=[(k, v) for k, v in config.items() if not k.startswith("_")],
        train_rows=[(k, train_config[k]) for k in TRAIN_KEYS if train_config.get(k) is not None],
        eval_rows=eval_rows,
        limitations=("A research checkpoint: it generates only its own classes, at its training resolution. "
                     "FID-FMNIST (when reported) uses the diffit_hf Fashion-MNIST classifier's features and is not "
                     "comparable with Inception FID."),
    )
    path = folder / "README.md"
    atomic_write_text(path, str(card))
    return path


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


#################################################################################
#                                      Push                                     #
#################################################################################


def verify_pipeline(folder: str | Path) -> None:
    """Loads the pipeline in `folder` with the installed classes and runs one tiny sampling step (one image, its
    first class); `ValueError` naming the folder and the reason if any part is missing or broken."""
    from .pipeline_diffit import DiffiTPipeline

    try:
        pipe = DiffiTPipeline.from_pretrained(folder)
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
) -> str:
    """Uploads a saved pipeline folder (weights, configs, sample grid, model card, remote code); returns the URL.

    The folder is copied to a staging directory first, so a failed push never modifies or loses it, and the staged
    pipeline must load and sample (`verify_pipeline`) before anything is uploaded. Errors: a broken pipeline ->
    `ValueError`; an unreachable endpoint -> `ConnectionError`; 401/403 -> `PermissionError`; `exist_ok=False` and
    an existing repo -> `FileExistsError`. `license`, `base_model`, `source_url`: see `write_model_card`.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="diffit-push-") as tmp:
        staging = stage_for_hub(folder, Path(tmp) / "repo", repo_id=repo_id, license=license, base_model=base_model,
                                source_url=source_url)
        verify_pipeline(staging)  # nothing is uploaded unless the staged pipeline loads and samples
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
