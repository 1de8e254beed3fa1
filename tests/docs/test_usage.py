"""docs/usage.md runs as written: the quickstart against a loopback Hub holding a tiny `facebook/DiT-XL-2-256`, the
command lines through their scripts (training commands on a tiny image folder, with flags appended that shrink
them; a later flag wins)."""

import json
import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from PIL import Image

from diffit_hf import DiffiTPipeline
from diffit_hf.training.config import parse_config

from ..hub_server import WRITE_TOKEN, card_meta, start_hub
from ..hub_server import run_and_sample as run_against
from ..tiny import tiny_vae

ROOT = Path(__file__).resolve().parents[2]
USAGE = (ROOT / "docs" / "usage.md").read_text()
CONFIGS = {"training/train_vae.py": "VAETrainConfig", "training/encode_latents.py": "EncodeConfig",
           "training/train_latent.py": "TrainConfig", "training/evaluate.py": "EvalConfig",
           "pipelines/generate.py": "GenerateConfig", "pipelines/push_to_hub.py": "PushConfig"}


def block_after(marker: str) -> str:
    """The fenced code block that follows `<!-- marker -->`."""
    return re.search(rf"<!-- {marker} -->\n```\w+\n(.*?)```", USAGE, re.S).group(1)


def commands(text: str) -> list[tuple[str, list[str]]]:
    """(script, arguments) of each `python X.py ...` / `accelerate launch X.py ...` command in a bash block."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line.split("#")[0])
        scripts = [i for i, w in enumerate(words) if w.endswith(".py")]
        if words and scripts:
            found.append((words[scripts[0]], words[scripts[0] + 1:]))
    return found


def bash_commands() -> list[tuple[str, list[str]]]:
    """The commands of every bash block of docs/usage.md."""
    return [c for block in re.findall(r"```bash\n(.*?)```", USAGE, re.S) for c in commands(block)]


def run_command(script, path: str, args: list[str]):
    module = script(path)
    return module.main(parse_config(getattr(module, CONFIGS[path]), args))


@pytest.fixture
def image_folders(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("my_images/cat", "my_images/dog", "my_flat"):
        (tmp_path / folder).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (70, 80, 3), dtype=np.uint8)).save(tmp_path / folder / f"{i}.png")
    return tmp_path


def test_quickstart_runs_as_written_against_the_hub(tmp_path, monkeypatch, script):
    torch.manual_seed(0)
    tiny = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                 num_layers=1, sample_size=8, patch_size=2, num_embeds_ada_norm=1000)
    DiTPipeline(transformer=tiny, vae=tiny_vae(), scheduler=DDIMScheduler()).save_pretrained(tmp_path / "tiny-dit")
    server, _state = start_hub()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        upload = textwrap.dedent(f"""
            from huggingface_hub import HfApi
            api = HfApi(token={WRITE_TOKEN!r})
            api.create_repo("facebook/DiT-XL-2-256")
            api.upload_folder(repo_id="facebook/DiT-XL-2-256", folder_path={str(tmp_path / "tiny-dit")!r})
        """)
        run_against(endpoint, upload + block_after("usage:quickstart"), tmp_path / "user")
    finally:
        server.shutdown()
    user = tmp_path / "user"
    assert all((user / f"dit-{i}.png").is_file() for i in range(3))
    # the saved pipeline loads, and its card would carry the weights' license
    assert DiffiTPipeline.from_pretrained(user / "dit-xl-2-256").num_classes == 1000
    from diffit_hf.pipelines.model_card import write_model_card

    assert card_meta(write_model_card(user / "dit-xl-2-256"))["license"] == "cc-by-nc-4.0"
    # the generate.py lines of sections 1 and 2 (grid, PNG folder), from the user's folder
    monkeypatch.chdir(user)
    # (not the 8-GPU job)
    lines = [c for c in bash_commands() if c[0] == "pipelines/generate.py" and "50000" not in c[1]]
    for path, args in lines:
        run_command(script, path, args + ["--steps", "2"])
    assert Image.open(user / "grid.png").size == (3 * 16, 4 * 16 + 12)
    assert len(list((user / "samples").glob("*.png"))) == 8
    assert json.loads((user / "samples" / "labels.json").read_text())["000001.png"]["label"] == 360


def test_training_commands_run_as_written(image_folders, monkeypatch, script):
    monkeypatch.chdir(image_folders)
    tiny = {"training/train_vae.py": ["--block-out-channels", "8", "16", "--norm-num-groups", "8", "--max-steps", "2",
                                      "--batch-size", "2", "--checkpointing-steps", "2", "--scaling-samples", "4",
                                      "--eval-samples", "4", "--lr-warmup-steps", "0", "--cpu-threads", "1"],
            "training/encode_latents.py": ["--batch-size", "4"],
            "training/train_latent.py": ["--max-steps", "2", "--batch-size", "2", "--checkpointing-steps", "2",
                                         "--validation-steps", "2", "--validation-per-class", "1",
                                         "--validation-inference-steps", "1", "--cpu-threads", "1", "--model-config",
                                         '{"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8}']}
    train = commands(block_after("usage:train"))
    assert [path for path, _ in train] == list(tiny)
    for path, args in train:
        run_command(script, path, args + tiny[path])
    pipe = DiffiTPipeline.from_pretrained("outputs/dit-mine")
    assert pipe.config.id2label == {0: "cat", 1: "dog"} and pipe.vae is not None  # classes from the sub-folders
    assert list(Path("outputs/dit-mine/logs").rglob("events.out.tfevents*"))
    # the data it was trained on, from the cache index, kept with the weights and named in the card
    provenance = json.loads(Path("outputs/dit-mine/provenance.json").read_text())
    assert provenance == {"source": "diffit_hf", "datasets": [{"name": "my_images", "split": "train", "id": None}]}
    assert "on my_images (train)" in Path("outputs/dit-mine/README.md").read_text()

    # pixel space, and a folder without class sub-folders: an unconditional model
    (pixels,) = [args for path, args in bash_commands() if "--model" in args and "DiffiT-CIFAR10" in args]
    args = [a if a != "my_images" else "my_flat" for a in pixels]
    run_command(script, "training/train_latent.py", args + tiny["training/train_latent.py"][:-2])
    pipe = DiffiTPipeline.from_pretrained("outputs/diffit-pixels")
    assert pipe.num_classes == 0 and pipe.vae is None
    pipe.set_progress_bar_config(disable=True)
    assert pipe(num_inference_steps=1, output_type="np").images.shape == (1, 32, 32, 3)


def test_every_documented_command_line_parses(script):
    """Evaluate and push need a trained classifier / Inception weights / a Hub: their command lines are checked to
    parse into their configs here, and the operations themselves are tested in tests/scripts and tests/pipelines."""
    seen = set()
    for path, args in bash_commands():
        args = [a for a in args if not (a.startswith("[") or a.endswith("]"))]  # optional flags in brackets
        module = script(path)
        parse_config(getattr(module, CONFIGS[path]), args) if path != "pipelines/generate.py" else None
        seen.add(path)
    assert seen == set(CONFIGS)
