"""DiffiT against DiT: speed (train steps and sampling, alternating in one process), and the ablation of what closes
the quality gap at the demo's budget, scored by both offline evaluators. Writes results/bench_diffit_{speed,
ablation,guidance,demo_guidance_nN,demo_loss}.{json,md} (or --results-name); docs/diffit_vs_dit.md reads them.

    python benchmarks/bench_diffit.py speed                         # ~5 min on 2 cores
    python benchmarks/bench_diffit.py ablation --steps 800 --jobs 2  # needs the demo's VAE, cache and both classifiers
    python benchmarks/bench_diffit.py guidance --rows "DiT-S/4 (demo)" "DiffiT (published)"
    python benchmarks/bench_diffit.py demo-guidance --num-samples 2000  # the two trained demos, a guidance sweep
    python benchmarks/bench_diffit.py demo-guidance --demo-runs x2 --guidance constant:3:0.3,5  # twice the budget
    python benchmarks/bench_diffit.py demo-guidance --demo-runs seeds --num-samples 5000 --guidance constant:3:0.3,5
    python benchmarks/bench_diffit.py demo-guidance --demo-runs seeds-single ...  # the same, and DiffiT + adaLN-single
    python benchmarks/bench_diffit.py demo-ema --num-samples 2000  # the demos retrained with snapshots: EMA lengths
    python benchmarks/bench_diffit.py demo-guidance --demo-runs seeds-raw ...  # DiT, adaLN-single: EMA and raw weights
    python benchmarks/bench_diffit.py demo-loss --demo-runs seeds-equal-steps  # held-out flow loss by noise level
    python benchmarks/bench_diffit.py demo-guidance --demo-runs seeds-label ...  # ... and per-block label tables

Speed: DiT-S/2 vs DiffiT-S/2 at 32x32x4 in fp32, eager (the issue's CPU target; DiffiT with each biased-attention
kernel), DiffiTPipeline sampling of both (DDIM, classifier-free guidance, latents out: the same VAE would decode
either), the demo's model configs (16x16x4 latents, bf16, batch 64, 6 blocks, 16 tokens), whose steps/s ratios
set the equal-wall-clock budgets of the ablation and the configs, and attention without a bias through SDPA and the
explicit formula (`layers.attention_backend`); `--demo-only`: the last two.

Ablation: every row trains with the demo recipe (`training/configs/demo_fmnist.yaml`: flow matching, logit-normal
timesteps, EMA) at the lr it was measured with (`RECIPE_LR_3E4`: 3e-4, no clipping; rows may override it) through
`train_latent.py`, for `--steps` steps and for the steps the DiT row's
`--steps` take at its measured speed (equal wall clock); the EMA weights at both points are scored by
`training/evaluate.py` (FID-FMNIST and FID-FMNIST-spatial, KID, precision/recall, class consistency, floors) with
25 DPM-Solver++ steps and guidance 4. Rows run `--jobs` at a time on one CPU thread each: their step counts are
fixed beforehand, so running side by side changes no result. Finished runs are reused (delete the run folder to
redo one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import RECIPE_LR_3E4, SAMPLER_LABELS, alternate, describe, train_step  # beside this script (sys.path[0])

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
DEMO = ROOT / "training" / "configs" / "demo_fmnist.yaml"

# The demo's model (DiT-S/4 x 6 blocks: 16 tokens of 16x16x4 latents) and DiffiT at the same width, depth and tokens.
DIT = ("DiT-S/4", {"num_layers": 6})
DIFFIT = ("DiffiT-S/2", {"num_layers": 6, "patch_size": 4})
ADALN = {"adaln_zero": True}
ADALN_FINAL = {"adaln_zero": True, "final_layer_type": "adaln"}
ADALN_SINGLE_FINAL = {**ADALN_FINAL, "adaln_single": True}  # PixArt-alpha's shared adaLN-single
ADALN_LABEL_FINAL = {**ADALN_SINGLE_FINAL, "adaln_label_table": True}  # ... and per-block label tables


def lr_clip(lr: str) -> list[str]:
    """train_latent flags: learning rate `lr` with gradients clipped at norm 1 (MDT's clipping)."""
    return ["--learning-rate", lr, "--max-grad-norm", "1.0"]


# row -> (preset, model overrides, extra train_latent flags)
ROWS = {
    "DiT-S/4 (demo)": (*DIT, []),
    "DiffiT (published)": (*DIFFIT, []),
    "DiffiT + zero-init residual": (DIFFIT[0], {**DIFFIT[1], "zero_init_residual": True}, []),
    "DiffiT + adaLN final layer": (DIFFIT[0], {**DIFFIT[1], "final_layer_type": "adaln"}, []),
    "DiffiT + LayerNorm final layer": (DIFFIT[0], {**DIFFIT[1], "final_layer_type": "layernorm"}, []),
    "DiffiT + adaLN-Zero": (DIFFIT[0], {**DIFFIT[1], **ADALN}, []),
    "DiffiT + adaLN-Zero + adaLN final": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, []),
    "DiffiT, clip 1 (MDT)": (*DIFFIT, ["--max-grad-norm", "1.0"]),
    "DiffiT, lr 1e-4": (*DIFFIT, ["--learning-rate", "1e-4"]),
    "DiffiT, lr 1e-3 + clip 1": (*DIFFIT, lr_clip("1e-3")),
    "DiffiT, AdamW beta2 0.95": (*DIFFIT, ["--adam-beta2", "0.95"]),
    "DiffiT, no EMA": (*DIFFIT, ["--ema-decay", "0", "--no-ema-warmup"]),
    "DiffiT, label table std 0.2": (DIFFIT[0], {**DIFFIT[1], "class_embed_std": 0.2}, []),
    # the recipe point that helped the published block most, on DiT and on DiffiT with both additions
    "DiT-S/4, lr 1e-3 + clip 1": (*DIT, lr_clip("1e-3")),
    "DiffiT + adaLN-Zero + adaLN final, lr 1e-3 + clip 1": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, lr_clip("1e-3")),
    "DiffiT + adaLN-Zero + adaLN final, AdamW beta2 0.95": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, [
        "--adam-beta2", "0.95"]),
    "DiT-S/4, lr 2e-3 + clip 1": (*DIT, lr_clip("2e-3")),
    "DiffiT + adaLN-Zero + adaLN final, lr 2e-3 + clip 1": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, lr_clip("2e-3")),
    # the lr decayed to zero over the run (cosine after the warmup), on both models
    "DiT-S/4, lr 1e-3 + clip 1, cosine decay": (*DIT, [*lr_clip("1e-3"), "--lr-scheduler", "cosine"]),
    "DiffiT + adaLN-Zero + adaLN final, lr 1e-3 + clip 1, cosine decay": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, [
        *lr_clip("1e-3"), "--lr-scheduler", "cosine"]),
    # half the demo's batch: twice the steps in the same wall clock
    "DiT-S/4, lr 1e-3 + clip 1, batch 32": (*DIT, [*lr_clip("1e-3"), "--batch-size", "32"]),
    "DiffiT + adaLN-Zero + adaLN final, lr 1e-3 + clip 1, batch 32": (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL}, [
        *lr_clip("1e-3"), "--batch-size", "32"]),
}
DEMO_BATCH = 64  # demo_fmnist.yaml's batch, at which the demo-config speeds are measured


#################################################################################
#                                      Speed                                    #
#################################################################################


def build(preset: str, overrides: dict, sample_size: int, num_classes: int = 1000):
    from diffit_hf import create_model

    torch.manual_seed(0)
    model = create_model(preset, sample_size=sample_size, num_classes=num_classes, **overrides)
    with torch.no_grad():  # trained-like, non-zero weights for both models (zero-init output layers included)
        for p in model.parameters():
            p.normal_(std=0.02)
    return model


def make_train_step(preset: str, overrides: dict, sample_size: int, batch: int, precision: str, backend: str,
                    unbiased_backend: str = "auto", optimizer: str = "default", num_classes: int = 1000):
    """One train step (forward, MSE, backward, AdamW; `optimizer` as in `common.train_step`) of a fresh model, with
    DiffiT's biased-attention kernel and the kernel of attention without a bias (DiT's)."""
    return train_step(build(preset, overrides, sample_size, num_classes).train(), batch, precision, backend,
                      unbiased_backend=unbiased_backend, optimizer=optimizer)


def make_sampler(preset: str, sample_size: int, labels: int, steps: int, guidance: float):
    """DiffiTPipeline sampling `labels` images with classifier-free guidance (DDIM), latents out."""
    from diffusers import DDIMScheduler

    from diffit_hf import DiffiTPipeline
    from diffit_hf.models import layers

    pipe = DiffiTPipeline(transformer=build(preset, {}, sample_size).eval(), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def sample():
        layers.biased_attention_backend = "auto"
        pipe(list(range(labels)), guidance_scale=guidance, num_inference_steps=steps,
             generator=torch.Generator().manual_seed(0), output_type="latent")

    return sample


def speed(args) -> dict:
    torch.set_num_threads(args.threads)
    sections = []
    if args.demo_only:
        return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "threads": args.threads,
                "sections": [demo_speed(args), *attention_speed(args)]}
    # 1. Training at 32x32x4 fp32 eager (256 tokens): DiT-S/2 and DiffiT-S/2 with each biased-attention kernel
    runs = {"DiT-S/2": ("DiT-S/2", {}, "auto"), "DiffiT-S/2 (auto: cpu_flash)": ("DiffiT-S/2", {}, "auto"),
            "DiffiT-S/2 (explicit, before)": ("DiffiT-S/2", {}, "explicit"),
            "DiffiT-S/2 (sdpa math)": ("DiffiT-S/2", {}, "sdpa")}
    secs = alternate({k: make_train_step(p, o, 32, args.batch, "fp32", b) for k, (p, o, b) in runs.items()},
                     args.repeats)
    sections.append({"name": f"train step, 32x32x4, fp32 eager, batch {args.batch}", "unit": "samples/s",
                     "rows": {k: args.batch / s for k, s in secs.items()}, "reference": "DiT-S/2"})
    # 2. Sampling at 32x32x4 fp32: DiffiTPipeline with either model
    secs = alternate({k: make_sampler(k, 32, args.sample_labels, args.sample_steps, 4.0)
                      for k in ("DiT-S/2", "DiffiT-S/2")}, max(3, args.repeats // 4))
    sections.append({"name": f"sampling, 32x32x4, fp32, {args.sample_labels} images, {args.sample_steps} DDIM steps, "
                             "guidance 4 (latents out)", "unit": "images/s",
                     "rows": {k: args.sample_labels / s for k, s in secs.items()}, "reference": "DiT-S/2"})
    sections += [demo_speed(args), *attention_speed(args)]
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "sections": sections}


def demo_speed(args) -> dict:
    """The demo's model configurations (16 tokens, batch 64), each step as `train_latent.py` takes it (AdamW, then
    the EMA update): the steps/s behind the ablation's equal-wall-clock budgets, in the ablation's precision. Rows
    marked "(before)" undo one earlier speed change; the two "without" rows are counterfactuals, not models one can
    train: the DiffiT config's step with one part of TMSA left out (`tmsa_without`), to show where its extra time
    goes. Every model has Fashion-MNIST's 10 classes (since 2026-12-07's label-table row; 1,000 before, the
    presets' default, which the demos never had)."""
    diffit = (DIFFIT[0], {**DIFFIT[1], **ADALN_FINAL})
    models = {"DiT-S/4 (demo)": (*DIT, "auto", "training", None),
              "DiT-S/4 (demo), SDPA attention (before)": (*DIT, "sdpa", "training", None),
              "DiT-S/4 (demo), AdamW and EMA loops (before)": (*DIT, "auto", "training-before", None),
              "DiffiT (published)": (*DIFFIT, "auto", "training", None),
              "DiffiT + adaLN-Zero": (DIFFIT[0], {**DIFFIT[1], **ADALN}, "auto", "training", None),
              "DiffiT + adaLN-Zero + adaLN final": (*diffit, "auto", "training", None),
              "DiffiT + adaLN-single + adaLN final": (DIFFIT[0], {**DIFFIT[1], **ADALN_SINGLE_FINAL}, "auto",
                                                      "training", None),
              "DiffiT + adaLN-single + label tables + adaLN final": (DIFFIT[0], {**DIFFIT[1], **ADALN_LABEL_FINAL},
                                                                     "auto", "training", None),
              "DiffiT + adaLN-Zero + adaLN final, AdamW and EMA loops (before)": (*diffit, "auto", "training-before",
                                                                                  None),
              "same, without TMSA's time token (counterfactual)": (*diffit, "auto", "training", "time_token"),
              "same, without the relative position bias (counterfactual)": (*diffit, "auto", "training", "bias")}
    steps = {}
    for name, (preset, overrides, unbiased, optimizer, without) in models.items():
        step = make_train_step(preset, overrides, 16, 64, args.precision, "auto", unbiased, optimizer,
                               num_classes=10)  # Fashion-MNIST's: the label tables' size, as trained
        steps[name] = step if without is None else tmsa_without(without, step)
    secs = alternate(steps, args.repeats)
    return {"name": f"demo config: train step + EMA, 16x16x4, {args.precision}, batch 64, 6 blocks, 16 tokens",
            "unit": "steps/s", "rows": {k: 1 / s for k, s in secs.items()}, "reference": "DiT-S/4 (demo)",
            "precision": args.precision}


def tmsa_without(part: str, step):
    """`step` run with every TMSA computing its attention without `part`: "time_token" (no x_t W_t projection or
    its addition to q/k/v) or "bias" (no relative position bias); global windows only, as in the demo configs. A
    measurement device only: the model's own `TMSA.forward` is put back after each call."""
    from diffit_hf.models import layers
    from diffit_hf.models.transformer_diffit import TMSA

    def forward(self, x, time_token, grid):
        qkv = self.to_qkv(x)
        if part != "time_token":
            qkv = qkv + self.to_qkv_time(time_token)[:, None]
        q, k, v = qkv.chunk(3, dim=-1)
        bias = None if part == "bias" else self.rel_pos_bias(grid).to(q.dtype)
        return self.to_out(layers.multihead_attention(q, k, v, self.num_heads, bias))

    def run():
        own = TMSA.forward
        TMSA.forward = forward
        try:
            step()
        finally:
            TMSA.forward = own

    return run


def attention_speed(args) -> list[dict]:
    """Attention without a bias (DiT's) alone, through SDPA and through the explicit formula, in the run's precision:
    forward + backward and forward only, at the demo's shape (64 x 16 tokens) and DiT-S/2's at 32x32x4 (16 x 256),
    width 384, 6 heads. The measurement behind `layers.pick_attention`."""
    from diffit_hf.models import layers

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    sections = []
    for n, tokens in ((64, 16), (16, 256)):
        for train in (True, False):
            q, k, v = (torch.randn(n, tokens, 384, dtype=dtype, requires_grad=train) for _ in range(3))

            def call(backend, q=q, k=k, v=v, train=train):
                def fn():
                    layers.attention_backend = backend
                    with torch.set_grad_enabled(train):
                        out = layers.multihead_attention(q, k, v, 6)  # (N, T, 384)
                    if train:
                        out.float().square().sum().backward()
                return fn

            secs = alternate({"sdpa": call("sdpa"), "explicit": call("explicit")}, args.repeats)
            layers.attention_backend = "auto"
            sections.append({"name": f"attention without a bias, {args.precision}, {n} x {tokens} tokens, width 384, "
                                     f"6 heads, {'forward + backward' if train else 'forward'}",
                             "unit": "calls/s", "rows": {k: 1 / s for k, s in secs.items()}, "reference": "sdpa"})
    return sections


def render_speed(result: dict) -> str:
    m = result["machine"]
    lines = [f"DiffiT vs DiT speed, measured on {m['cpu']} ({m['cores']} cores, {result['threads']} threads, fp32 "
             f"matmul {m['fp32_gflops']} GFLOP/s), {result['date']}; each section alternates its rows in one process "
             "(median).", ""]
    for sec in result["sections"]:
        ref = sec["rows"][sec["reference"]]
        lines += [f"**{sec['name']}**", "", f"| run | {sec['unit']} | vs {sec['reference']} |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.2f} | {v / ref:.2f}x |" for k, v in sec["rows"].items()]
        lines.append("")
    return "\n".join(lines)


#################################################################################
#                                     Ablation                                  #
#################################################################################


def run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)


def checkpoint_pipeline(folder: Path, step: int, weights: str = "ema") -> Path:
    """The run's pipeline at `step`: the exported one when training ended there, else one with the EMA weights of
    checkpoint `step` (in `at-STEP/`); `weights="raw"`: the optimiser's weights of checkpoint `step`, no EMA (in
    `raw-STEP/`)."""
    from diffit_hf import DiffiTPipeline

    if weights not in ("ema", "raw"):
        raise ValueError(f"Unknown weights {weights!r}; valid choices are ema, raw.")
    if weights == "ema" and json.loads((folder / "train_results.json").read_text())["steps"] == step:
        return folder
    out = folder / (f"at-{step}" if weights == "ema" else f"raw-{step}")
    if not (out / "model_index.json").exists():
        pipe = DiffiTPipeline.from_pretrained(folder)
        ckpt = [c for c in (folder / "checkpoints").glob("checkpoint-*") if int(c.name.split("-")[1]) == step]
        if not ckpt:
            raise FileNotFoundError(f"{folder} holds no checkpoint of step {step}: delete the run folder to redo it.")
        part = ckpt[0] / ("transformer_ema" if weights == "ema" else "transformer")
        pipe.transformer = type(pipe.transformer).from_pretrained(part)
        tmp = folder / f".{out.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp)
        tmp.rename(out)
    return out


def evaluate(pipeline: Path, out: Path, args, guidance: float = 4.0, schedule: str = "constant",
             interval: tuple[float, float] | None = None, scheduler: str = "dpm", steps: int = 25) -> dict:
    if not out.exists():
        run([sys.executable, "training/evaluate.py", "--pipeline", str(pipeline), "--num-samples",
             str(args.num_samples), "--num-inference-steps", str(steps), "--scheduler", scheduler, "--guidance-scale",
             str(guidance), "--guidance-schedule", schedule, "--cpu-threads", "1", "--output", str(out)]
            + (["--guidance-interval", *map(str, interval)] if interval else []), out.with_suffix(".log"))
    ev = json.loads(out.read_text())
    second = ev["second_evaluator"]
    return {"fid": ev["fid"], "fid2": second["fid"], "kid": ev["kid"], "kid2": second["kid"],
            "precision": ev["precision"], "recall": ev["recall"], "precision2": second["precision"],
            "recall2": second["recall"], "cc": ev["class_consistency"], "cc2": second["class_consistency"],
            "floor_fid": ev["floor_fid"], "floor_fid2": second["floor_fid"],
            "floor_cc": ev["floor_class_consistency"], "floor_cc2": second["floor_class_consistency"]}


def ablation_row(name: str, args, rates: dict[str, float]) -> dict:
    preset, overrides, flags = ROWS[name]
    model_key = next((k for k in rates if ROWS.get(k, (None, None))[:2] == (preset, overrides)), None)
    rate = rates.get(model_key) or rates["DiffiT (published)" if preset.startswith("DiffiT") else "DiT-S/4 (demo)"]
    batch = int(flags[flags.index("--batch-size") + 1]) if "--batch-size" in flags else DEMO_BATCH
    rate *= DEMO_BATCH / batch  # at another batch: the same samples/s (a CPU's step time is ~linear in the batch;
    # the row's measured train_seconds say how far that holds)
    wall_steps = round(args.steps * rate / rates["DiT-S/4 (demo)"])
    if abs(wall_steps - args.steps) <= 0.02 * args.steps:  # within timing noise: one budget, one evaluation
        wall_steps = args.steps
    first, last = sorted((args.steps, wall_steps))
    folder = ROOT / args.out / name.replace(" ", "_").replace("/", "").replace(",", "").replace("+", "plus")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "train_results.json").exists():
        run([sys.executable, "training/train_latent.py", "--config", str(DEMO), "--model", preset, "--model-config",
             json.dumps(overrides), *RECIPE_LR_3E4, *flags,
             "--mixed-precision", "no" if args.precision == "fp32" else args.precision,
             "--max-steps", str(last), "--checkpointing-steps", str(first),
             "--validation-steps", str(last), "--report-to", "none", "--cpu-threads", "1",
             "--overwrite-output-dir", "--output-dir", str(folder)], folder / "train.log")
    train = json.loads((folder / "train_results.json").read_text())
    losses = logged_losses(folder)
    at = {s: checkpoint_pipeline(folder, s) for s in (first, last)}
    row = {"run": name, "model": preset, "model_config": overrides, "flags": flags, "params": train["params"],
           "batch": batch, "steps_per_s_demo_config": rate, "equal_wall_steps": wall_steps,
           "train_seconds": train["train_seconds"],
           "loss": {str(s): losses[s] for s in (150, 400, args.steps, wall_steps) if s in losses}}
    row["equal_steps"] = {"steps": args.steps, "pipeline": str(at[args.steps].relative_to(ROOT)),
                          **evaluate(at[args.steps], folder / f"eval-{args.steps}-n{args.num_samples}.json", args)}
    row["equal_wall"] = {"steps": wall_steps, "pipeline": str(at[wall_steps].relative_to(ROOT)),
                         **evaluate(at[wall_steps], folder / f"eval-{wall_steps}-n{args.num_samples}.json", args)}
    cells = (("steps", row["equal_steps"]), ("wall", row["equal_wall"]))
    print(f"{name}: " + ", ".join(f"{k} FID {v['fid']:.2f}/{v['fid2']:.2f} cc {v['cc']:.1%}/{v['cc2']:.1%}"
                                  for k, v in cells), flush=True)
    return row


def ablation(args) -> dict:
    speed_file = RESULTS / "bench_diffit_speed.json"
    if not speed_file.exists():
        raise FileNotFoundError(f"{speed_file} is missing: run `python benchmarks/bench_diffit.py speed` first (its "
                                "demo-config steps/s set the equal-wall-clock budgets).")
    speed_result = json.loads(speed_file.read_text())
    demo = next(s for s in speed_result["sections"] if s["name"].startswith("demo config"))
    if demo.get("precision", "bf16") != args.precision:
        raise ValueError(f"{speed_file} measured the demo config in {demo.get('precision', 'bf16')}, the ablation "
                         f"trains in {args.precision}: rerun `bench_diffit.py speed --precision {args.precision}`.")
    rates = demo["rows"]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda name: ablation_row(name, args, rates), args.rows))
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "steps": args.steps,
            "num_samples": args.num_samples, "precision": args.precision, "speed_machine": speed_result["machine"],
            "speed_threads": speed_result["threads"], "rows": rows}


def render_ablation(result: dict) -> str:
    lines = [f"DiffiT ablation at the demo's recipe, {result['date']} ({result['machine']['cpu']}): 16x16x4 latents, "
             f"6 blocks, 16 tokens, flow matching, lr 3e-4 without clipping unless the run names another, "
             f"{result['precision']}, EMA; equal steps = "
             f"{result['steps']}, equal wall clock = the steps DiT-S/4 takes for {result['steps']} at the measured "
             "demo-config speeds. "
             f"{result['num_samples']:,} samples, 25 DPM-Solver++ steps, guidance 4 (constant). Each cell: "
             "FID-FMNIST / FID-FMNIST-spatial, class consistency under each.", "",
             "| run | params | loss @150 / @400 | equal steps: FID | class cons. | equal wall: steps | FID | "
             "class cons. |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        s, w, loss = r["equal_steps"], r["equal_wall"], r["loss"]
        losses = " / ".join(f"{loss[k]:.3f}" if loss.get(k) is not None else "-" for k in ("150", "400"))
        lines.append(f"| {r['run']} | {r['params'] / 1e6:.1f}M | {losses} | {s['fid']:.2f} / {s['fid2']:.2f} | "
                     f"{s['cc']:.1%} / {s['cc2']:.1%} | {w['steps']} | {w['fid']:.2f} / {w['fid2']:.2f} | "
                     f"{w['cc']:.1%} / {w['cc2']:.1%} |")
    if result["rows"]:
        f = result["rows"][0]["equal_steps"]
        lines += ["", f"Real-data floors ({result['num_samples']:,} training images vs the test split): FID "
                      f"{f['floor_fid']:.2f} / {f['floor_fid2']:.2f}, class consistency {f['floor_cc']:.1%} / "
                      f"{f['floor_cc2']:.1%}."]
    return "\n".join(lines)


#################################################################################
#                                     Guidance                                  #
#################################################################################

GUIDANCE = ["constant:2", "constant:4", "constant:6", "power_cosine:4.4", "power_cosine:8"]


def guidance_setting(text: str) -> tuple[float, str, tuple[float, float] | None]:
    """`SCHEDULE:SCALE[:LOW,HIGH]` (e.g. `constant:4:0.3,5`: guidance 4 at noise levels sigma in (0.3, 5] only) ->
    (scale, schedule, interval)."""
    from diffit_hf.pipelines.schedules import GUIDANCE_SCHEDULES, check_guidance_interval

    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in GUIDANCE_SCHEDULES:
        raise ValueError(f"--guidance {text!r}: expected SCHEDULE:SCALE[:LOW,HIGH] with SCHEDULE one of "
                         f"{', '.join(GUIDANCE_SCHEDULES)}, e.g. constant:4 or constant:4:0.3,5.")
    interval = tuple(float(x) for x in parts[2].split(",")) if len(parts) == 3 else None
    return float(parts[1]), parts[0], check_guidance_interval(interval)


def guidance_row(name: str, pipeline: Path, setting: str, args) -> dict:
    """`pipeline` scored under one `guidance_setting` with `args.scheduler` for `args.inference_steps` steps (its
    eval JSON kept in the pipeline folder and reused)."""
    scale, schedule, interval = guidance_setting(setting)
    tag = f"-i{interval[0]}-{interval[1]}" if interval else ""
    if (args.scheduler, args.inference_steps) != ("dpm", 25):  # the files of the default sampler keep their names
        tag += f"-{args.scheduler}{args.inference_steps}"
    out = pipeline / f"eval-guidance-{schedule}-{scale}{tag}-n{args.num_samples}.json"
    return {"run": name, "scale": scale, "schedule": schedule, "interval": interval, "scheduler": args.scheduler,
            "inference_steps": args.inference_steps,
            **evaluate(pipeline, out, args, scale, schedule, interval, args.scheduler, args.inference_steps)}


def guidance(args) -> dict:
    """Each chosen run's equal-wall-clock pipeline under several guidance scales and schedules (DiffiT's paper
    samples with power-cosine 4.4, DiT's with constant 1.5-4): every model at its own best guidance."""
    ablation_result = json.loads((RESULTS / "bench_diffit_ablation.json").read_text())
    runs = {r["run"]: r for r in ablation_result["rows"]}
    missing = [name for name in args.rows if name not in runs]
    if missing:
        raise ValueError(f"Rows {missing} are not in results/bench_diffit_ablation.json; run the ablation first.")
    settings = args.guidance or GUIDANCE
    jobs = [(name, ROOT / runs[name]["equal_wall"]["pipeline"], setting) for name in args.rows for setting in settings]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: guidance_row(*job, args), jobs))
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "num_samples": args.num_samples, "rows": rows}


# The two demos at their full, equal-wall-clock budgets (demo_fmnist.yaml and demo_fmnist_diffit.yaml: lr 1e-3 with
# clipping at 1 and the wsd decay, 6,000 / 5,640 steps since 2026-12-07; results files before that date name the
# configs of their time: 2,400 / 2,280 steps, at lr 3e-4 where they name no lr). The row names are those of the runs
# these results were made with: the DiffiT config has used adaLN-single for 5,940 steps since late 2026-12-07.
DEMOS = {"DiT-S/4 demo (6,000 steps, lr 1e-3 + clip 1)": "outputs/dit-fmnist",
         "DiffiT + adaLN-Zero + adaLN output demo (5,640 steps, lr 1e-3 + clip 1)": "outputs/diffit-fmnist"}
DEMO_GUIDANCE = ["constant:1.5", "constant:2", "constant:2.5", "constant:3", "constant:4"]
# ... and at twice their budgets: each constant-lr run's last checkpoint resumed with `--lr-scheduler wsd --max-steps
# 4800 / 4560 --lr-decay-steps 960 / 912` (the decay over the last 20%; the resumed run is the wsd run of twice the
# steps, exactly: check_lr_resume), into outputs/{dit,diffit}-fmnist-x2.
DEMO_RUN_SETS = {"configs": DEMOS, "x2": {
    "DiT-S/4 demo config, 2x steps (4,800), wsd": "outputs/dit-fmnist-x2",
    "DiffiT + adaLN-Zero + adaLN output demo config, 2x steps (4,560), wsd": "outputs/diffit-fmnist-x2"}}
# ... and the configs trained with three seeds (--seed 0, the configs' own: outputs/{dit,diffit}-fmnist; --seed 1 and 2
# into outputs/{dit,diffit}-fmnist-seedN, same VAE): how far one pair of runs goes (`seed_summary`). "seeds-single"
# adds DiffiT with PixArt-alpha's adaLN-single in place of the per-block adaLN-Zero Linears (the DiffiT config with
# `"adaln_single": true` in model_config, `--max_steps 6000 --lr_decay_steps 1200`: DiT's steps, at equal speed;
# seed 0 into outputs/diffit-single-fmnist, seeds 1 and 2 side by side on one thread each, as the pairs above).
SEED_MODELS = {"DiT-S/4 demo config": "outputs/dit-fmnist",
               "DiffiT + adaLN-Zero + adaLN output demo config": "outputs/diffit-fmnist",
               "DiffiT + adaLN-single + adaLN output, 6,000 steps": "outputs/diffit-single-fmnist",
               # ... and with a per-block label table beside the shared regression ("adaln_label_table": true in
               # model_config, the same steps and seeds as adaLN-single: seeds 0 and 1 side by side on one thread
               # each, then seed 2 alone on two)
               "DiffiT + adaLN-single + label tables + adaLN output, 6,000 steps": "outputs/diffit-label-fmnist"}


def seed_runs(models: list[str]) -> dict[str, str]:
    """"MODEL, seed N" -> its run folder (seed 0: the model's own folder, else FOLDER-seedN), for seeds 0-2."""
    return {f"{m}, seed {seed}": SEED_MODELS[m] + (f"-seed{seed}" if seed else "")
            for seed in (0, 1, 2) for m in models}


DEMO_RUN_SETS["seeds"] = seed_runs(list(SEED_MODELS)[:2])
DEMO_RUN_SETS["seeds-single"] = seed_runs(list(SEED_MODELS)[:3])
DEMO_RUN_SETS["seeds-single-only"] = seed_runs([list(SEED_MODELS)[0], list(SEED_MODELS)[2]])  # DiT and adaLN-single
DEMO_RUN_SETS["seeds-label"] = seed_runs([list(SEED_MODELS)[i] for i in (0, 2, 3)])  # ... and the label tables
DEMO_RUN_SETS["seeds-label-only"] = seed_runs([list(SEED_MODELS)[i] for i in (0, 3)])  # DiT and the label tables
# ... and every run of DiT's 6,000 steps: DiT and adaLN-single (seeds 0-2), per-block adaLN-Zero (seeds 1 and 2,
# trained with `--max_steps 6000 --lr_decay_steps 1200` into outputs/diffit-fmnist-6000-seedN): equal steps.
DEMO_RUN_SETS["seeds-equal-steps"] = {**DEMO_RUN_SETS["seeds-single-only"], **{
    f"DiffiT + adaLN-Zero + adaLN output, 6,000 steps, seed {seed}": f"outputs/diffit-fmnist-6000-seed{seed}"
    for seed in (1, 2)}}
# ... and DiT and DiffiT with adaLN-single without their EMA: the raw weights of each seed run's last checkpoint
# (`checkpoint_pipeline(..., weights="raw")`, made on first use in RUN/raw-6000), beside the EMA pipelines.
RAW_STEP = 6000
DEMO_RUN_SETS["seeds-raw"] = {**DEMO_RUN_SETS["seeds-single-only"], **{
    name.replace(", seed", " (raw weights), seed"): f"{path}/raw-{RAW_STEP}"
    for name, path in DEMO_RUN_SETS["seeds-single-only"].items()}}


def demo_guidance(args) -> dict:
    """The trained DiT and DiffiT demo pipelines under a sweep of constant guidance scales: each demo at its own best
    guidance, both evaluators (the demos' own eval.json used guidance 4 for both)."""
    demos = DEMO_RUN_SETS[args.demo_runs]
    for path in demos.values():  # raw-weight pipelines of finished runs, made from their last checkpoint
        run_dir, name = (ROOT / path).parent, (ROOT / path).name
        if name == f"raw-{RAW_STEP}" and (run_dir / "train_results.json").exists():
            checkpoint_pipeline(run_dir, RAW_STEP, weights="raw")
    missing = [path for path in demos.values() if not (ROOT / path / "model_index.json").exists()]
    if missing:
        raise FileNotFoundError(f"{missing} missing: train the demos first (README: the demo, with "
                                "--config training/configs/demo_fmnist.yaml and demo_fmnist_diffit.yaml; x2: see "
                                "DEMO_RUN_SETS).")
    settings = args.guidance or DEMO_GUIDANCE
    jobs = [(name, ROOT / path, setting) for name, path in demos.items() for setting in settings]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: guidance_row(*job, args), jobs))
    for row, (_, pipeline, _) in zip(rows, jobs):
        run_dir = pipeline if (pipeline / "logs").is_dir() else pipeline.parent  # raw-STEP/: its run's log
        row["train_loss_last_20pct"] = late_loss(run_dir)
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "num_samples": args.num_samples,
            "demo_runs": args.demo_runs, "rows": rows}


def logged_losses(run_dir: Path) -> dict[int, float]:
    """step -> training loss, from a run's `logs/loss.csv` (empty without one)."""
    path = run_dir / "logs" / "loss.csv"
    if not path.exists():
        return {}
    rows = (line.split(",")[:2] for line in path.read_text().splitlines()[1:])
    return {int(step): float(loss) for step, loss in rows}


def late_loss(run_dir: Path, fraction: float = 0.2) -> float | None:
    """The mean training loss over the last `fraction` of a run's logged steps (None without a log): the seed runs
    of two models share their data order and noise, so these means compare the models' fit."""
    losses = logged_losses(run_dir)
    if not losses:
        return None
    return statistics.mean(loss for step, loss in losses.items() if step > max(losses) * (1 - fraction))


def seed_pair_line(setting: tuple, by: dict, dit: str, diffit: str) -> str:
    """One seed_summary row: both models' mean +- sd over the seeds they share (`by[model, seed]` -> a result row),
    DiffiT minus DiT seed by seed, and in how many seeds DiffiT's FID is lower under each evaluator."""
    seeds = sorted(s for (m, s) in by if m == dit and (diffit, s) in by)
    cells = []
    for model in (dit, diffit):
        stats = []
        for key in ("fid", "fid2"):
            values = [by[model, s][key] for s in seeds]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            stats.append(f"{statistics.mean(values):.3f} +- {spread:.3f}")
        cells.append(" / ".join(stats))
    diffs = [(by[diffit, s]["fid"] - by[dit, s]["fid"], by[diffit, s]["fid2"] - by[dit, s]["fid2"]) for s in seeds]
    per_seed = ", ".join(f"{s}: {a:+.3f} / {b:+.3f}" for s, (a, b) in zip(seeds, diffs))
    wins = f"{sum(a < 0 for a, _ in diffs)} / {sum(b < 0 for _, b in diffs)} of {len(seeds)}"
    return (f"| {setting[0]} {setting[1]:g} {setting[2]} | {diffit} | {dit} | {cells[0]} | {cells[1]} | {per_seed} | "
            f"{wins} |")


def seed_summary(rows: list[dict]) -> list[str]:
    """Markdown lines: per guidance setting, each model's mean and spread (sample standard deviation) over its
    seeds under both evaluators, and each DiffiT model minus each DiT model seed by seed (the pairs share a seed)."""
    models = list(dict.fromkeys(r["run"].rsplit(", seed ", 1)[0] for r in rows))
    dits = [m for m in models if m.startswith("DiT")]
    lines = ["", "Over the seeds: mean +- standard deviation (FID-FMNIST / FID-FMNIST-spatial), and DiffiT minus DiT "
             "for each seed (negative: DiffiT's FID is lower).", "",
             "| guidance | DiffiT model | DiT model | DiT | DiffiT | DiffiT - DiT, per seed | DiffiT lower, seeds |",
             "|---|---|---|---:|---:|---|---:|"]
    settings = dict.fromkeys((r["schedule"], r["scale"], interval_label(r)) for r in rows)
    for setting in settings:
        by = {}
        for r in rows:
            if (r["schedule"], r["scale"], interval_label(r)) == setting:
                model, seed = r["run"].rsplit(", seed ", 1)
                by[model, int(seed)] = r
        lines += [seed_pair_line(setting, by, dit, diffit) for diffit in models if diffit not in dits for dit in dits
                  if any(m == dit and (diffit, s) in by for m, s in by)]
    losses = {}
    for r in rows:
        if r.get("train_loss_last_20pct") is not None:
            model, seed = r["run"].rsplit(", seed ", 1)
            losses.setdefault(model.replace(" (raw weights)", ""), {})[int(seed)] = r["train_loss_last_20pct"]
    if losses:
        lines += ["", "Mean training loss over the last 20% of the steps, per seed (the seed runs share their data "
                  "order and noise):", "", "| model | " + " | ".join(f"seed {s}" for s in (0, 1, 2)) + " |",
                  "|---|" + "---:|" * 3]
        lines += [f"| {model} | " + " | ".join(f"{seeds.get(s, float('nan')):.4f}" for s in (0, 1, 2)) + " |"
                  for model, seeds in losses.items()]
    return lines


# Held-out flow loss by noise level: where each model's fit is better or worse, independent of any sampler.
LOSS_TIMES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
LOSS_BATCH = 500


def demo_loss(args) -> dict:
    """Each run's exported (EMA) transformer on the first `args.num_samples` Fashion-MNIST test images: the flow loss
    `|v(x_t, t, y) - (noise - x_0)|^2` at fixed noise levels t (`LOSS_TIMES`; t = 1 is pure noise), with the true
    labels and with the null label (the unconditional branch classifier-free guidance subtracts). Every run gets the
    same latents (one draw from the VAE posterior, seed 0) and the same noise; the runs must share their VAE."""
    from diffit_hf import DiffiTPipeline
    from diffit_hf.data import load_image_tensors
    from diffit_hf.evaluation.extractors import file_fingerprint

    torch.set_num_threads(args.threads)
    runs = DEMO_RUN_SETS[args.demo_runs]
    missing = [path for path in runs.values() if not (ROOT / path / "model_index.json").exists()]
    if missing:
        raise FileNotFoundError(f"{missing} missing: train those runs first (see DEMO_RUN_SETS).")
    vaes = {file_fingerprint(ROOT / path / "vae" / "diffusion_pytorch_model.safetensors") for path in runs.values()}
    if len(vaes) > 1:
        raise ValueError(f"The runs of {args.demo_runs!r} do not share one VAE; their latents would differ.")
    for path in runs.values():
        scheduler = json.loads((ROOT / path / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
        if scheduler != "FlowMatchEulerDiscreteScheduler":
            raise ValueError(f"{path} was not trained with the flow objective (its scheduler is {scheduler}); "
                             "demo-loss scores flow runs only.")
    first = DiffiTPipeline.from_pretrained(ROOT / next(iter(runs.values())))
    images, labels = load_image_tensors("fashion-mnist", "test", 32, grayscale=True, limit=args.num_samples)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        posterior = first.vae.eval().encode(images).latent_dist
    latents = (posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
               ) * first.vae.config.scaling_factor  # (N, 4, 16, 16)
    noise = torch.randn(latents.shape, generator=generator)
    null = torch.full_like(labels, first.transformer.config.num_classes)
    rows = []
    for name, path in runs.items():
        model, losses = DiffiTPipeline.from_pretrained(ROOT / path).transformer.eval(), {}
        for t in LOSS_TIMES:
            x_t = (1 - t) * latents + t * noise
            per_label = []
            for y in (labels, null):
                with torch.no_grad():
                    v = flow_velocity(model, x_t, t, y)  # (N, 4, 16, 16)
                per_label.append((v - (noise - latents)).square().mean().item())
            losses[str(t)] = {"conditional": per_label[0], "unconditional": per_label[1]}
        rows.append({"run": name, "path": path, "loss": losses})
        print(name, {t: round(v["conditional"], 4) for t, v in losses.items()}, flush=True)
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "num_images": args.num_samples,
            "demo_runs": args.demo_runs, "rows": rows}


def flow_velocity(model, x_t: torch.Tensor, t: float, labels: torch.Tensor) -> torch.Tensor:
    """`model`'s velocity for latents `x_t` (N, C, H, W) at flow time t in [0, 1] (timestep 1000 t, as training
    feeds it) and `labels` (N,), LOSS_BATCH rows at a time."""
    from diffit_hf.evaluation import in_batches

    return in_batches(lambda i: model(x_t[i], torch.full((len(i),), t * 1000.0), labels[i]).sample,
                      torch.arange(len(x_t)), LOSS_BATCH)


def render_loss(result: dict) -> str:
    by = {}
    for r in result["rows"]:
        model, seed = r["run"].rsplit(", seed ", 1)
        by.setdefault(model, {})[int(seed)] = r["loss"]
    times = list(result["rows"][0]["loss"])
    lines = [f"Held-out flow loss by noise level, {result['date']}: the exported (EMA) transformers on the first "
             f"{result['num_images']:,} Fashion-MNIST test images (one VAE latent draw, fixed noise, the same for "
             "every run); t = 1 is pure noise. Each cell: the mean over the seeds, with the true labels / the null "
             "label (the unconditional branch).", "",
             "| model | seeds | " + " | ".join(f"t = {t}" for t in times) + " |",
             "|---|---:|" + "---:|" * len(times)]
    for model, seeds in by.items():
        cells = [f"{statistics.mean(seeds[s][t]['conditional'] for s in seeds):.4f} / "
                 f"{statistics.mean(seeds[s][t]['unconditional'] for s in seeds):.4f}" for t in times]
        lines.append(f"| {model} | {len(seeds)} | " + " | ".join(cells) + " |")
    dit = next((m for m in by if m.startswith("DiT")), None)
    if dit is not None:
        lines += ["", "Each DiffiT model against DiT with the true labels: the seeds (of those both have) in which "
                  "DiffiT's loss is lower, and the mean relative difference.", "",
                  "| DiffiT model | " + " | ".join(f"t = {t}" for t in times) + " |", "|---|" + "---:|" * len(times)]
        for model, seeds in by.items():
            if model == dit:
                continue
            shared = [s for s in seeds if s in by[dit]]
            cells = []
            for t in times:
                rel = [seeds[s][t]["conditional"] / by[dit][s][t]["conditional"] - 1 for s in shared]
                cells.append(f"{sum(r < 0 for r in rel)} of {len(rel)}, {statistics.mean(rel):+.1%}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# The two demo configs retrained with `--snapshot-steps 20` (identical training: the loss curves match the runs above
# step for step), so that any EMA of them can be scored (training/posthoc_ema.py); "wsd": retrained also with
# `--lr-scheduler wsd --lr-decay-steps 480 / 456` (the lr decays linearly to zero over the last 20% of the steps).
SNAPSHOT_RUNS = {"snap": "", "wsd": ", wsd (lr to 0 over the last 20%)"}
EMA_POWERS = [0.0, 2 / 3, 0.75, 0.8, 0.85, 0.9]


def ema_row(name: str, run_dir: Path, power: float, setting: str, args) -> dict:
    """`run_dir`'s post-hoc EMA with warmup power `power` (0: the raw weights), scored under the guidance
    `setting`."""
    pipeline = run_dir.with_name(f"{run_dir.name}-ema{power:.3f}")
    if not (pipeline / "model_index.json").exists():
        run([sys.executable, "training/posthoc_ema.py", "--run", str(run_dir), "--ema-power", str(power),
             "--output", str(pipeline)], pipeline.with_name(pipeline.name + ".log"))
    ema = json.loads((pipeline / "posthoc_ema.json").read_text())
    row = guidance_row(name, pipeline, setting, args)
    return {**row, "ema_power": power, "ema_length_steps": ema["ema_length_steps"], "steps": ema["step"]}


def demo_ema(args) -> dict:
    """The two demo configs' runs with snapshots, each at several EMA lengths (post hoc) and guidance settings, both
    evaluators."""
    runs = {name.replace(")", SNAPSHOT_RUNS[args.snapshot_runs] + ")"): f"{path}-{args.snapshot_runs}"
            for name, path in DEMOS.items()}
    missing = [path for path in runs.values() if not (ROOT / path / "snapshots").is_dir()]
    if missing:
        raise FileNotFoundError(f"{missing} missing: train the demo configs with --snapshot-steps 20 --output-dir "
                                "there first.")
    settings = args.guidance or ["constant:3:0.3,5"]
    jobs = [(name, ROOT / path, p, setting) for name, path in runs.items() for p in args.ema_powers
            for setting in settings]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: ema_row(*job, args), jobs))
    return {"machine": describe(), "date": time.strftime("%Y-%m-%d"), "num_samples": args.num_samples, "rows": rows}


def interval_label(row: dict) -> str:
    """A row's guidance interval of noise levels, `(low, high]`, or "all" (guidance at every step)."""
    return "({:g}, {:g}]".format(*row["interval"]) if row.get("interval") else "all"


def render_ema(result: dict) -> str:
    first = result["rows"][0]
    lines = [f"EMA length after training, {result['date']}: {result['num_samples']:,} samples, "
             f"{first['inference_steps']} {SAMPLER_LABELS[first['scheduler']]} steps; guidance: SCHEDULE SCALE at the "
             "noise levels sigma = 1/sqrt(SNR) in the interval (all: every step). The EMA: warmup decay "
             "1 - (1 + step) ** -power (power 0: the raw weights; the configs' 2/3), computed post hoc from raw "
             "snapshots every 20 steps; its length = the standard deviation of its weights over the steps. Each "
             "cell: FID-FMNIST / FID-FMNIST-spatial.", "",
             "| run | EMA power | EMA length (steps) | guidance | FID | class cons. | precision | recall |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        interval = interval_label(r)
        lines.append(f"| {r['run']} | {r['ema_power']:.3g} | {r['ema_length_steps']:.0f} | "
                     f"{r['schedule']} {r['scale']:g} {interval} | "
                     f"{r['fid']:.2f} / {r['fid2']:.2f} | {r['cc']:.1%} / {r['cc2']:.1%} | "
                     f"{r['precision']:.3f} / {r['precision2']:.3f} | {r['recall']:.3f} / {r['recall2']:.3f} |")
    floor = result["rows"][0]
    lines += ["", f"Real-data floors: FID {floor['floor_fid']:.2f} / {floor['floor_fid2']:.2f}, class consistency "
                  f"{floor['floor_cc']:.1%} / {floor['floor_cc2']:.1%}."]
    return "\n".join(lines)


def render_guidance(result: dict) -> str:
    first = result["rows"][0] if result["rows"] else {}  # every row of a run samples alike (older files: 25 DPM)
    sampler = f"{first.get('inference_steps', 25)} {SAMPLER_LABELS[first.get('scheduler', 'dpm')]}"
    lines = [f"Guidance at equal wall clock, {result['date']}: {result['num_samples']:,} samples, {sampler} "
             f"steps; power-cosine = DiffiT's schedule (exponent 4: ~1 at high noise, the full scale "
             "at t = 0). Each cell: FID-FMNIST / FID-FMNIST-spatial; interval: the noise levels sigma = "
             "1/sqrt(SNR) guided (all: every step).", "",
             "| run | schedule | scale | interval | FID | class cons. | precision | recall |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        interval = interval_label(r)
        lines.append(f"| {r['run']} | {r['schedule']} | {r['scale']} | {interval} | "
                     f"{r['fid']:.2f} / {r['fid2']:.2f} | {r['cc']:.1%} / {r['cc2']:.1%} | "
                     f"{r['precision']:.3f} / {r['precision2']:.3f} | "
                     f"{r['recall']:.3f} / {r['recall2']:.3f} |")
    if result.get("demo_runs", "").startswith("seeds"):
        lines += seed_summary(result["rows"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["speed", "ablation", "guidance", "demo-guidance", "demo-ema", "demo-loss"])
    parser.add_argument("--threads", type=int, default=2, help="speed: CPU threads")
    parser.add_argument("--batch", type=int, default=32, help="speed: batch of the 32x32x4 train steps")
    parser.add_argument("--repeats", type=int, default=20, help="speed: timed calls per row")
    parser.add_argument("--sample-labels", type=int, default=8)
    parser.add_argument("--sample-steps", type=int, default=10)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help=(
        "demo-config speed and ablation training: the demo's bf16, or fp32 where bf16 matmuls are slow (CPUs "
        "without AVX512-BF16/AMX)"))
    parser.add_argument("--demo-only", action="store_true", help="speed: only the demo-config section")
    parser.add_argument("--guidance", nargs="+", help=(
        "guidance, demo-guidance: SCHEDULE:SCALE[:LOW,HIGH] settings, e.g. constant:4:0.3,5 guides noise levels "
        "sigma in (0.3, 5] only (default: the GUIDANCE / DEMO_GUIDANCE list)"))
    parser.add_argument("--scheduler", default="dpm", choices=list(SAMPLER_LABELS), help=(
        "guidance, demo-guidance: the sampler (evaluate.py --scheduler; on a flow model its flow variant)"))
    parser.add_argument("--inference-steps", type=int, default=25, help="guidance, demo-guidance: sampler steps")
    parser.add_argument("--demo-runs", default="configs", choices=list(DEMO_RUN_SETS), help=(
        "demo-guidance: the demos' lr 1e-3 runs in outputs/{dit,diffit}-fmnist, or x2: such runs continued to twice "
        "their steps with a wsd decay, or seeds: the configs trained with --seed 0, 1 and 2 (SEED_MODELS), or "
        "seeds-single: those and DiffiT with adaLN-single, seeds-single-only: DiT and adaLN-single, seeds-raw: "
        "those and their raw weights, seeds-equal-steps: every run of 6,000 steps, seeds-label(-only): DiT, "
        "(adaLN-single and) adaLN-single with per-block label tables (DEMO_RUN_SETS). demo-loss: "
        "the runs scored"))
    parser.add_argument("--ema-powers", nargs="+", type=float, default=EMA_POWERS, help=(
        "demo-ema: EMA warmup powers to score (0: the raw weights)"))
    parser.add_argument("--snapshot-runs", default="snap", choices=list(SNAPSHOT_RUNS), help=(
        "demo-ema: the runs outputs/{dit,diffit}-fmnist-NAME (snap: the configs; wsd: with a final lr decay)"))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--steps", type=int, default=800, help="ablation: the equal-steps budget")
    parser.add_argument("--num-samples", type=int, default=2000, help="samples scored (demo-loss: test images)")
    parser.add_argument("--jobs", type=int, default=2, help="ablation rows trained side by side (one thread each)")
    parser.add_argument("--out", default="outputs/bench-diffit")
    parser.add_argument("--results-name", help="results/bench_diffit_NAME.{json,md} (default: the part's name)")
    args = parser.parse_args()
    for setting in args.guidance or []:  # a bad setting fails before any work
        guidance_setting(setting)
    if args.inference_steps < 1:
        parser.error(f"--inference-steps must be >= 1, got {args.inference_steps}.")
    RESULTS.mkdir(exist_ok=True)
    if args.part == "speed":
        result, render = speed(args), render_speed
    elif args.part == "ablation":
        result, render = ablation(args), render_ablation
    elif args.part == "guidance":
        result, render = guidance(args), render_guidance
    elif args.part == "demo-ema":
        result, render = demo_ema(args), render_ema
    elif args.part == "demo-loss":
        result, render = demo_loss(args), render_loss
    else:
        result, render = demo_guidance(args), render_guidance
    name = args.results_name or args.part.replace("-", "_") + (
        f"_n{args.num_samples}" if args.part.startswith("demo-") else "")
    (RESULTS / f"bench_diffit_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"bench_diffit_{name}.md").write_text(render(result) + "\n")
    print(render(result))


if __name__ == "__main__":
    main()
