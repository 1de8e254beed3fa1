"""The end of a training run: the pipeline folder users load, with the EMA weights, samples and a model card."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..pipelines.model_card import PROVENANCE, card_datasets, write_model_card
from ..pipelines.pipeline_diffit import DiffiTPipeline
from ..utils import atomic_write_json
from .previews import write_progress_gif


def export_pipeline(output_dir: str | Path, transformer, ema, scheduler, vae=None, id2label: dict | None = None,
                    train_config: dict | None = None, provenance: dict | None = None) -> DiffiTPipeline:
    """Copies the EMA weights into `transformer` (training is over) and saves, in `output_dir`, the
    `DiffiTPipeline` (transformer, scheduler, VAE, class names), `training_progress.gif` and `samples.png` from the
    validation grids in `samples/`, and `README.md`, the model card generated from `train_config`. `provenance`:
    where fine-tuned weights came from (`init_weights.source_provenance`; default: trained here from scratch)."""
    out = Path(output_dir)
    if ema is not None:
        ema.copy_to(transformer.parameters())
    pipe = DiffiTPipeline(transformer=transformer.eval(), scheduler=scheduler, vae=vae, id2label=id2label)
    pipe.save_pretrained(out)
    frames = write_progress_gif(out / "samples", out / "training_progress.gif")
    if frames:
        shutil.copyfile(frames[-1], out / "samples.png")
    # what the weights were trained on, kept with them: a card regenerated at push time lists it too
    provenance = {"source": "diffit_hf", **{k: v for k, v in (provenance or {}).items() if v is not None}}
    atomic_write_json(out / PROVENANCE, {**provenance, "datasets": card_datasets(train_config or {})})
    write_model_card(out, train_config=train_config, base_model=provenance.get("base_model"))
    return pipe
