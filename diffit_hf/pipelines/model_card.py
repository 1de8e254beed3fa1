"""The model card of a pushed pipeline, generated from the folder (`write_model_card`), and where its weights come
from (`provenance.json`, which decides the card's license).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..utils import atomic_write_json, atomic_write_text
from .schedules import schedulers_for

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
    from ..data.cache_format import read_cache_index  # (here: diffit_hf.data imports `datasets`, slow to import)

    found, meta = [], None
    if train_config.get("latents"):
        try:
            meta = read_cache_index(train_config["latents"])
        except FileNotFoundError:  # the cache was moved or deleted since training: the card says what it knows
            meta = None
    if meta is not None:
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
