"""Train a Fashion-MNIST classifier whose features define an offline FID: FID-FMNIST (`--features global`, the
default) or the independent second evaluator FID-FMNIST-spatial (`--features spatial`: other widths and depth,
features that keep a 4x4 spatial map, another seed, random shifts). `training/evaluate.py` reports both.

    python training/train_classifier.py                      # -> outputs/classifier-fmnist
    python training/train_classifier.py --features spatial   # -> outputs/classifier-fmnist-spatial

Writes a `FashionClassifier` folder (config.json + safetensors) and `metrics.json` (test accuracy); an existing
classifier folder is refused (pass --overwrite-output-dir). Values are only comparable with values from the same
weights, never with Inception FID.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.utils.logging import get_logger
from tqdm.auto import tqdm

from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import FashionClassifier
from diffit_hf.evaluation.classifier import FEATURE_TYPES
from diffit_hf.training.config import parse_config, save_config
from diffit_hf.training.runtime import adamw, lr_schedule, set_cpu_threads
from diffit_hf.utils import atomic_write_json

logger = get_logger("diffit_hf.train_classifier")  # shown by parse_config (show_library_logs)


@dataclass
class ClassifierConfig:
    """Train the FID-FMNIST feature extractor (see training/train_classifier.py)."""

    dataset: str = field(default="fashion-mnist", metadata={"help": "labelled images: fashion-mnist, folder, Hub id"})
    resolution: int = field(default=32, metadata={"help": "the samples' resolution; images are resized to it"})
    epochs: int = field(default=4, metadata={"help": "passes over the training images"})
    batch_size: int = field(default=128, metadata={"help": "images per optimiser step"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak learning rate (cosine schedule)"})
    weight_decay: float = field(default=5e-4, metadata={"help": "AdamW weight decay"})
    random_flip: bool = field(default=True, metadata={"help": "random horizontal flips of training images"})
    features: str = field(default="global", metadata={
        "choices": list(FEATURE_TYPES), "help": "global: FID-FMNIST's design; spatial: the second evaluator's"})
    random_shift: int | None = field(default=None, metadata={
        "help": "random shifts of up to this many pixels (default: 0 for global, 2 for spatial)"})
    train_limit: int | None = field(default=None, metadata={"help": "use only the first N training images"})
    test_limit: int | None = field(default=None, metadata={"help": "measure accuracy on the first N test images"})
    output_dir: str | None = field(default=None, metadata={
        "help": "the FashionClassifier folder (default: outputs/classifier-fmnist, or "
                "outputs/classifier-fmnist-spatial for --features spatial)"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "replace an existing classifier folder"})
    cpu_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (None: cores/procs)"})
    seed: int | None = field(default=None, metadata={
        "help": "initialisation, shuffling and augmentation (default: 0 for global, 1 for spatial)"})

    def __post_init__(self):
        spatial = self.features == "spatial"
        if self.output_dir is None:
            self.output_dir = "outputs/classifier-fmnist-spatial" if spatial else "outputs/classifier-fmnist"
        if self.random_shift is None:
            self.random_shift = 2 if spatial else 0
        if self.seed is None:
            self.seed = 1 if spatial else 0
        if self.random_shift < 0:
            raise ValueError(f"--random-shift must be >= 0, got {self.random_shift}.")

    def model_config(self) -> dict:
        """The network design of each feature type (the second evaluator differs in every choice)."""
        if self.features == "spatial":
            return dict(channels=(32, 64, 128), feature_dim=32, features="spatial", convs_per_stage=1)
        return {}


def random_shift(x: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to `pixels` in x and y (edge-padded, then cropped back): (N, C, H, W)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor, device, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + batch].to(device)).argmax(1).cpu() == labels[i:i + batch]).sum())
                  for i in range(0, len(images), batch))
    return correct / len(images)


def main(cfg: ClassifierConfig) -> dict:
    accelerator = Accelerator()
    set_cpu_threads(accelerator, cfg.cpu_threads)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if (out / "config.json").exists() and not cfg.overwrite_output_dir:
        raise ValueError(f"{out} already holds a classifier (FIDs computed with it would no longer compare); pass "
                         "--overwrite-output-dir to replace it, or another --output-dir.")
    train_x, train_y = load_image_tensors(cfg.dataset, "train", cfg.resolution, grayscale=True, limit=cfg.train_limit)
    test_x, test_y = load_image_tensors(cfg.dataset, "test", cfg.resolution, grayscale=True, limit=cfg.test_limit)
    model = FashionClassifier(num_classes=int(train_y.max()) + 1, **cfg.model_config())
    steps_per_epoch = len(train_x) // cfg.batch_size
    optimizer = adamw(model.parameters(), cfg.learning_rate, cfg.weight_decay)
    schedule = lr_schedule(accelerator, "cosine", optimizer, steps_per_epoch // 10, cfg.epochs * steps_per_epoch)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    generator = torch.Generator().manual_seed(cfg.seed)
    start = time.time()
    bar = tqdm(total=cfg.epochs * steps_per_epoch, desc="classifier", disable=not accelerator.is_local_main_process)
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = train_x[idx].to(accelerator.device), train_y[idx].to(accelerator.device)
            if cfg.random_flip:
                flip = torch.rand(len(x), generator=generator).to(x.device) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if cfg.random_shift:
                x = random_shift(x, cfg.random_shift, generator)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            accelerator.backward(loss)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model = accelerator.unwrap_model(model)
    metrics = {"test_accuracy": accuracy(model, test_x, test_y, accelerator.device),
               "train_seconds": time.time() - start, "config": dataclasses.asdict(cfg)}
    if accelerator.is_main_process:
        model.save_pretrained(out)
        save_config(cfg, out / "train_config.json")
        atomic_write_json(out / "metrics.json", metrics)
        logger.info(f"test accuracy {metrics['test_accuracy']:.4f}; saved {out}")
    return metrics


if __name__ == "__main__":
    main(parse_config(ClassifierConfig))
