"""Try a DiffiTPipeline in a browser: a Gradio app for a saved pipeline folder or Hub repo id.

    python pipelines/app.py --model outputs/dit-fmnist [--host 127.0.0.1] [--port 7860] [--max-images 64]

Pick classes by name (unconditional models have no class picker), guidance scale and schedule, steps, a scheduler
(the `DiffiTPipeline.use_scheduler` short names that sample the model's objective, or the saved one), seed and
images per class; Generate shows a grid (one row per class) and offers it as a PNG. The pipeline's own messages for
bad input (an unknown class, steps out of range, a scheduler the model refuses) show in the page. One generation
runs at a time (Gradio's queue), of at most `--max-images` images.

The same file is the app of a Hub Space (`pipelines/push_to_hub.py --space you/name`): where diffit_hf is not
installed it loads the model repo's own code with plain diffusers (`trust_remote_code=True`), and without `--model`
it serves the first model listed in the `models:` front matter of the README.md beside it (the Space's card). So it
imports only torch, diffusers and huggingface_hub (and gradio), and its CLI is argparse rather than diffit_hf's
config parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import make_image_grid
from huggingface_hub.repocard import metadata_load

SAVED = "saved"  # the scheduler choice that keeps the pipeline's own scheduler
MAX_STEPS = 1000
# small images (32x32 Fashion-MNIST) fill the grid box, pixels kept sharp
CSS = "#grid img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def load_pipeline(model: str, device: str | None = None) -> DiffusionPipeline:
    """The pipeline of a folder or Hub repo id, with diffit_hf's classes where installed, else the repo's code."""
    try:
        from diffit_hf import DiffiTPipeline
    except ImportError:  # a Space: the pushed model repo ships its pipeline and model code
        pipe = DiffusionPipeline.from_pretrained(model, trust_remote_code=True)
    else:
        pipe = DiffiTPipeline.from_pretrained(model)
    return pipe.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _as_int(value):
    """Whole floats (as gr.Number may send them) as ints; anything else as it is, for the pipeline to check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class AppSampler:
    """What the page shows and calls, without Gradio: the pipeline's choices and one generation.

    Args:
        pipe (`DiffiTPipeline`):
            The pipeline (diffit_hf's class, or the same class from a pushed repo's code).
        max_images (`int`, defaults to 64):
            The most images one generation may make (classes x images per class).
        max_steps (`int`, defaults to `MAX_STEPS`):
            The most denoising steps one generation may take.
        out_dir (`str`, *optional*):
            Where the grids are written for download; default: a new temporary folder.
    """

    def __init__(self, pipe, max_images: int = 64, max_steps: int = MAX_STEPS, out_dir: str | None = None):
        self.pipe = pipe
        self.module = importlib.import_module(type(pipe).__module__)  # pipeline_diffit: its scheduler tables
        self.saved_scheduler = pipe.scheduler
        self.max_images, self.max_steps = max_images, max_steps
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="diffit-app-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        pipe.set_progress_bar_config(desc="sampling")  # the page's progress bar follows it (track_tqdm)

    @property
    def conditional(self) -> bool:
        return self.pipe.num_classes > 0

    @property
    def class_names(self) -> list[str]:
        """One name per class id (the first of its comma-separated synonyms), or the ids without `id2label`."""
        id2label = {int(k): v for k, v in (self.pipe.config.id2label or {}).items()}
        if not id2label:
            return [str(i) for i in range(self.pipe.num_classes)]
        return [id2label[i].split(",")[0].strip() for i in sorted(id2label)]

    @property
    def schedulers(self) -> list[str]:
        """`SAVED`, then the `use_scheduler` short names for what the model predicts."""
        kind = self.pipe.config.prediction_type
        table = {"flow": self.module.FLOW_SCHEDULERS, "edm": self.module.EDM_SCHEDULERS}.get(kind,
                                                                                            self.module.SCHEDULERS)
        return [SAVED, *table]

    @property
    def guidance_schedules(self) -> list[str]:
        return list(self.module.GUIDANCE_SCHEDULES)

    def _labels(self, classes: list[str] | None) -> list[int | str] | None:
        """The picked classes as the pipeline takes them (names, or ids typed as digits); `None`: unconditional."""
        if not self.conditional:
            return None
        return [int(c) if str(c).strip().isdigit() else str(c) for c in (classes or [])]

    def generate(
        self,
        classes: list[str] | None,
        guidance_scale: float = 4.0,
        guidance_schedule: str = "constant",
        steps: int = 25,
        scheduler: str = SAVED,
        seed: int = 0,
        per_class: int = 4,
    ):
        """Returns `(grid, png_path, message)`: the grid (one row per class, `per_class` columns) and its file, or
        `(None, None, message)` with the pipeline's `ValueError` message for bad input."""
        steps, seed, per_class = _as_int(steps), _as_int(seed), _as_int(per_class)
        labels = self._labels(classes)
        try:  # the pipeline checks the rest (types, ranges, names), with its own messages
            if not isinstance(seed, int):
                raise ValueError(f"seed must be an integer, got {seed!r}.")
            count = per_class * (len(labels) if labels else 1) if isinstance(per_class, int) else 0
            if count > self.max_images:
                raise ValueError(f"{count} images asked for; this app makes at most {self.max_images} at a time.")
            if isinstance(steps, int) and steps > self.max_steps:
                raise ValueError(f"num_inference_steps must be <= {self.max_steps} here, got {steps}.")
            self.pipe.scheduler = self.saved_scheduler  # each generation starts from the saved config
            if scheduler != SAVED:
                self.pipe.use_scheduler(scheduler)
            generator = torch.Generator(self.pipe.device).manual_seed(seed)
            images = self.pipe(labels, num_images_per_label=per_class, guidance_scale=guidance_scale,
                               guidance_schedule=guidance_schedule, num_inference_steps=steps,
                               generator=generator).images
        except ValueError as err:  # the pipeline's (or scheduler's) own message, never a traceback
            return None, None, f"**Error:** {err}"
        grid = make_image_grid(images, rows=len(labels) if labels else 1, cols=per_class)
        path = self.out_dir / f"grid_seed{seed}.png"
        grid.save(path)
        rows = ", ".join(map(str, labels)) if labels else "unconditional"
        name = type(self.pipe.scheduler).__name__
        return grid, str(path), (f"{len(images)} images of {images[0].width}x{images[0].height}, rows: {rows}; "
                                 f"{steps} steps of {name}, seed {seed}.")


def build_demo(sampler: AppSampler, title: str = "DiffiTPipeline"):
    """The page: inputs on the left, the grid, its download and the message on the right; one generation at a
    time."""
    import gradio as gr

    conditional = sampler.conditional
    names = sampler.class_names
    per_class_max = max(1, min(16, sampler.max_images))

    def run(classes, guidance_scale, guidance_schedule, steps, scheduler, seed, per_class,
            progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (Gradio's way to ask for a progress bar)
        grid, path, message = sampler.generate(classes, guidance_scale, guidance_schedule, steps, scheduler, seed,
                                               per_class)
        return grid, gr.DownloadButton(value=path, interactive=path is not None), message

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n{'Class-conditional' if conditional else 'Unconditional'} diffusion transformer "
                    f"({type(sampler.pipe.transformer).__name__}, {sampler.pipe.config.prediction_type} "
                    "objective).")
        with gr.Row():
            with gr.Column():
                classes = gr.Dropdown(names, value=names[:4], multiselect=True, allow_custom_value=True,
                                      label="Classes (one grid row each)", visible=conditional, elem_id="classes")
                guidance_scale = gr.Slider(1.0, 10.0, value=4.0, step=0.1, visible=conditional,
                                           label="Guidance scale (1: none)", elem_id="guidance-scale")
                guidance_schedule = gr.Radio(sampler.guidance_schedules, value="constant", visible=conditional,
                                             label="Guidance schedule", elem_id="guidance-schedule")
                steps = gr.Number(25, precision=0, label=f"Steps (1 to {sampler.max_steps})", elem_id="steps")
                scheduler = gr.Dropdown(sampler.schedulers, value=SAVED, elem_id="scheduler",
                                        label=f"Scheduler ({SAVED}: {type(sampler.saved_scheduler).__name__})")
                seed = gr.Number(0, precision=0, label="Seed", elem_id="seed")
                per_class = gr.Slider(1, per_class_max, value=min(4, per_class_max), step=1, elem_id="per-class",
                                      label="Images per class" if conditional else "Images")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                grid = gr.Image(type="pil", format="png", label="Grid", interactive=False, height=360, elem_id="grid")
                download = gr.DownloadButton("Download PNG", interactive=False, elem_id="download")
                message = gr.Markdown(elem_id="message")
        button.click(run, [classes, guidance_scale, guidance_schedule, steps, scheduler, seed, per_class],
                     [grid, download, message], concurrency_limit=1)
    demo.queue(max_size=16, default_concurrency_limit=1)
    return demo


def launch(demo, **kwargs):
    """`demo.launch(**kwargs)` with the page's CSS and without server-side rendering (no Node.js needed)."""
    return demo.launch(css=CSS, ssr_mode=False, **kwargs)


def card_model(folder: str | Path | None = None) -> str | None:
    """The first model listed in the `models:` front matter of `folder/README.md` (default: the Space's card beside
    this file), if any."""
    card = Path(folder or Path(__file__).resolve().parent) / "README.md"
    models = metadata_load(card).get("models") if card.is_file() else None
    return models[0] if models else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a DiffiTPipeline in the browser (Gradio).")
    parser.add_argument("--model", default=os.environ.get("DIFFIT_MODEL") or card_model(),
                        help="pipeline folder or Hub repo id (default: $DIFFIT_MODEL, or the Space card's model)")
    parser.add_argument("--host", default=None, help="default: $GRADIO_SERVER_NAME or 127.0.0.1")
    parser.add_argument("--port", type=int, default=None, help="default: $GRADIO_SERVER_PORT or 7860")
    parser.add_argument("--max-images", type=int, default=64, help="the most images one generation makes")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = parser.parse_args(argv)
    if args.model is None:
        parser.error("--model is required: a saved pipeline folder or Hub repo id.")
    if args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}.")
    return args


def main(args: argparse.Namespace) -> None:
    sampler = AppSampler(load_pipeline(args.model, args.device), max_images=args.max_images)
    launch(build_demo(sampler, title=args.model.rstrip("/").split("/")[-1]), server_name=args.host,
           server_port=args.port)


if __name__ == "__main__":
    main(parse_args())
