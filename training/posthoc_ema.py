"""An EMA of a finished run, computed after training from the raw-weight snapshots that `train_latent.py
--snapshot-steps K` saved, written as a new pipeline (the run's folder is only read).

    accelerate launch training/train_latent.py --config training/configs/demo_fmnist_diffit.yaml \
        --snapshot-steps 20 --output-dir outputs/diffit-fmnist-snap
    python training/posthoc_ema.py --run outputs/diffit-fmnist-snap --ema-power 0.8 --output outputs/diffit-ema-0.8
    python training/evaluate.py --pipeline outputs/diffit-ema-0.8 ...

The EMA has `make_ema`'s schedules (`--ema-power` of the warmup schedule `decay = 1 - (1 + step) ** -power`, or
`--no-ema-warmup --ema-decay D`: DiT's constant decay), so one training run can be scored at several EMA lengths
without retraining (Karras et al. 2024 do this post hoc for EDM2). The output folder holds the pipeline and
`posthoc_ema.json` (the schedule, the snapshots used, the EMA's length in steps).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.utils.logging import get_logger
from safetensors.torch import load_file

from diffit_hf import DiffiTPipeline
from diffit_hf.training.config import parse_config
from diffit_hf.training.ema import SNAPSHOT_DIR, posthoc_ema, snapshot_path
from diffit_hf.utils import atomic_write_json

logger = get_logger("diffit_hf.posthoc_ema")  # shown by parse_config (show_library_logs)


@dataclass
class PosthocEMAConfig:
    """An EMA of a finished run from its snapshots (see training/posthoc_ema.py)."""

    run: str | None = field(default=None, metadata={
        "help": "a train_latent.py output folder with snapshots/ (required)"})
    output: str | None = field(default=None, metadata={"help": "the new pipeline folder; must not exist (required)"})
    ema_decay: float = field(default=0.9999, metadata={"help": "the largest decay (DiT's constant decay without "
                                                                 "warmup)"})
    ema_warmup: bool = field(default=True, metadata={"help": "the warmup schedule; --no-ema-warmup: constant decay"})
    ema_power: float = field(default=2 / 3, metadata={"help": "warmup: decay = 1 - (1 + step) ** -power; larger is "
                                                               "a longer average (train_latent.py's default 2/3; 0: "
                                                               "the raw weights)"})
    step: int | None = field(default=None, metadata={"help": "the EMA after this snapshot's step (default: the last)"})

    def __post_init__(self):
        if self.run is None or self.output is None:
            raise ValueError("--run (a train_latent.py output folder with snapshots/) and --output (a new folder) "
                             "are both required.")
        if self.ema_warmup and self.ema_power < 0:
            raise ValueError(f"--ema-power must be >= 0 (0: the raw weights of the last snapshot), got "
                             f"{self.ema_power}.")


def check_run(cfg: PosthocEMAConfig) -> tuple[Path, Path]:
    """Raises for a run without a pipeline or snapshots, or an output that exists; returns (run, output)."""
    run, output = Path(cfg.run), Path(cfg.output)
    if not (run / "model_index.json").exists():
        raise FileNotFoundError(f"{run} holds no pipeline (model_index.json): pass a finished train_latent.py run.")
    if not (run / SNAPSHOT_DIR).is_dir():
        raise FileNotFoundError(f"{run} holds no {SNAPSHOT_DIR}/: train with --snapshot-steps K to keep raw weights.")
    if output.exists():
        raise FileExistsError(f"{output} exists; pass a new --output folder (nothing is overwritten).")
    return run, output


def main(cfg: PosthocEMAConfig) -> dict:
    """Writes the pipeline with the post-hoc EMA to `cfg.output`; returns the summary (also `posthoc_ema.json`)."""
    run, output = check_run(cfg)
    state, summary = posthoc_ema(run / SNAPSHOT_DIR, cfg.ema_decay, cfg.ema_warmup, cfg.ema_power, cfg.step)
    step = summary["step"]
    # the snapshots belong to this run: the last one equals the raw weights of the run's checkpoint of that step
    ckpt = run / "checkpoints" / f"checkpoint-{step:07d}" / "transformer" / "diffusion_pytorch_model.safetensors"
    if ckpt.exists():
        raw, snap = load_file(str(ckpt)), load_file(str(snapshot_path(run / SNAPSHOT_DIR, step)))
        if raw.keys() != snap.keys() or any(not torch.equal(raw[k], snap[k]) for k in raw):
            raise ValueError(f"The snapshot of step {step} differs from {ckpt.parent}: the snapshots in "
                             f"{run / SNAPSHOT_DIR} are not this run's.")
    pipe = DiffiTPipeline.from_pretrained(run)
    pipe.transformer.load_state_dict(state, strict=True)  # another model's snapshots -> a clear key/shape error
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    summary = {**summary, "run": str(run), "config": asdict(cfg)}
    atomic_write_json(tmp / "posthoc_ema.json", summary)
    tmp.rename(output)
    logger.info(f"EMA of {run} after step {step} (power {cfg.ema_power}, decay {cfg.ema_decay}, warmup "
                f"{cfg.ema_warmup}): {summary['ema_length_steps']:.0f} steps long, from {summary['snapshots']} "
                f"snapshots at most {summary['max_gap']} steps apart; wrote {output}")
    if summary["max_gap"] > summary["ema_length_steps"] / 4:
        logger.warning("The snapshots lie far apart for an EMA this short: the result approximates it coarsely "
                       "(train with a smaller --snapshot-steps).")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return summary


if __name__ == "__main__":
    main(parse_config(PosthocEMAConfig))
