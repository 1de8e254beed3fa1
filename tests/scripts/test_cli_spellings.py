"""Every script's command line comes from its config dataclass (`parse_config`): `--a-b` and `--a_b`, `--no-x` and
`--no_x` give the same config, and the flags take effect."""

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.training.config import parse_config

from ..tiny import save_tiny_pixel_pipeline

ROOT = Path(__file__).resolve().parents[2]

# (script, config class, hyphenated flags, the values they must give)
CASES = [
    ("training/encode_latents.py", "EncodeConfig",
     ["--vae", "v", "--out", "o", "--shard-size", "3", "--image-column", "img", "--vae-subfolder", "vae"],
     {"shard_size": 3, "image_column": "img", "vae_subfolder": "vae"}),
    ("training/evaluate.py", "EvalConfig",
     ["--num-samples", "7", "--reference-split", "validation", "--no-grayscale", "--reference-limit", "5"],
     {"num_samples": 7, "reference_split": "validation", "grayscale": False, "reference_limit": 5}),
    ("training/train_classifier.py", "ClassifierConfig",
     ["--batch-size", "8", "--train-limit", "100", "--no-random-flip", "--output-dir", "clf"],
     {"batch_size": 8, "train_limit": 100, "random_flip": False, "output_dir": "clf"}),
    ("training/train_vae.py", "VAETrainConfig",
     ["--max-steps", "5", "--block-out-channels", "8", "16", "8", "--no-grayscale", "--resume-from-checkpoint",
      "latest"],
     {"max_steps": 5, "block_out_channels": (8, 16, 8), "grayscale": False, "resume_from_checkpoint": "latest"}),
    ("training/train_latent.py", "TrainConfig",
     ["--max-steps", "5", "--resume-from-checkpoint", "latest", "--no-ema-warmup", "--learning-rate", "1e-3"],
     {"max_steps": 5, "resume_from_checkpoint": "latest", "ema_warmup": False, "learning_rate": 1e-3}),
    ("training/posthoc_ema.py", "PosthocEMAConfig",
     ["--run", "r", "--output", "o", "--ema-power", "0.8", "--no-ema-warmup"],
     {"run": "r", "output": "o", "ema_power": 0.8, "ema_warmup": False}),
    ("pipelines/generate.py", "GenerateConfig",
     ["--model", "m", "--num-per-label", "2", "--guidance-scale", "2.5", "--guidance-schedule", "power_cosine"],
     {"num_per_label": 2, "guidance_scale": 2.5, "guidance_schedule": "power_cosine"}),
    ("pipelines/push_to_hub.py", "PushConfig",
     ["--folder", "f", "--repo-id", "you/x", "--no-exist-ok"],
     {"repo_id": "you/x", "exist_ok": False}),
    ("pipelines/convert_dit.py", "ConvertConfig",
     ["--official", "a.pt", "--out", "o", "--latent-size", "16", "--num-classes", "10"],
     {"latent_size": 16, "num_classes": 10}),
]


def underscored(argv: list[str]) -> list[str]:
    return ["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in argv]


@pytest.mark.parametrize("path, name, argv, expected", CASES, ids=[c[0] for c in CASES])
def test_both_spellings_give_the_same_config(script, path, name, argv, expected):
    cls = getattr(script(path), name)
    hyphens, underscores = parse_config(cls, argv), parse_config(cls, underscored(argv))
    assert hyphens == underscores
    assert {key: getattr(hyphens, key) for key in expected} == expected


def test_generate_cli_with_underscore_spellings(tmp_path):
    save_tiny_pixel_pipeline(tmp_path / "pipe", sample_size=8, patch_size=4)
    out = tmp_path / "grid.png"
    subprocess.run([sys.executable, str(ROOT / "pipelines" / "generate.py"), "--model", str(tmp_path / "pipe"),
                    "--labels", "Bag", "3", "--steps", "1", "--num_per_label", "3", "--guidance_scale", "2",
                    "--guidance_schedule", "power_cosine", "--scheduler", "ddim", "--out", str(out)], check=True)
    blank = [Image.new("L", (8, 8))] * 6
    assert Image.open(out).size == labelled_grid(blank, ["Bag", "Dress"], 3).size  # 2 columns of 3 images
