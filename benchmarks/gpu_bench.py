"""GPU numbers (issue 15): DiT-XL/2 and DiffiT-XL/2 bf16 train-step throughput, peak memory and MFU, eager vs
`torch.compile`, with and without gradient checkpointing (and DiffiT with its bias in `flex_attention`, mode
`compiled+flex`), next to diffusers' `DiTTransformer2DModel`; and
`DiffiTPipeline` vs diffusers' `DiTPipeline` sampling images/s at equal settings; with `--profile` (issue 21), where
the time of one eager DiT-XL/2 and one DiffiT-XL/2 train step and sampling step goes (torch.profiler, the ops with
the most self time on the device). Run through `gpu_bench.sh`.

    bash benchmarks/gpu_bench.sh                  # on a GPU: writes benchmarks/results/gpu_bench.{json,md}
    bash benchmarks/gpu_bench.sh --profile --rows diffit:eager diffit:compiled+flex dit:eager --time-budget 420
    bash benchmarks/gpu_bench.sh --tiny           # tiny models on CPU: checks the script runs (CI)

Each train row runs in its own subprocess (own memory peak, own compile) at the largest of `--batches` that fits.
A train step is bf16 autocast forward, MSE, backward, fused AdamW (fp32 master weights), like `train_latent.py
--mixed-precision bf16`. MFU = 3 x 2 x forward MACs per sample x samples/s / the GPU's dense bf16 peak (recomputation
under gradient checkpointing is not counted, as usual for MFU). Sampling uses one converted set of DiT-XL/2 weights
in both pipelines, the same VAE architecture (random weights: speed only), scheduler, steps and guidance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import cpu_name, median  # beside this script: a script's folder is sys.path[0]

RESULTS = Path(__file__).parent / "results"

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment, most specific first (vendor specs).
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("A100", 312.0),
                    ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0))

MODELS = {"dit": "DiT-XL/2", "diffit": "DiffiT-XL/2", "diffusers": "diffusers DiT-XL/2"}
MODES = ("eager", "eager+gc", "compiled", "compiled+gc", "compiled+flex")  # +flex: DiffiT's bias in flex_attention
# eager rows first (each compiled row runs at its eager row's batch), the sampling table before the first compile
DEFAULT_ROWS = ["dit:eager", "diffusers:eager", "diffit:eager", "dit:eager+gc", "diffit:eager+gc", "dit:compiled",
                "diffit:compiled", "diffit:compiled+flex", "diffusers:compiled", "dit:compiled+gc",
                "diffit:compiled+gc"]
TINY = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
            num_classes=1000)  # DiTPipeline hard-codes the null label 1000


def bf16_peak_tflops(device_name: str) -> float | None:
    for fragment, peak in BF16_PEAK_TFLOPS:
        if fragment.lower() in device_name.lower():
            return peak
    return None


def build(model: str, tiny: bool):
    """Our DiT/DiffiT preset, or diffusers' DiTTransformer2DModel with DiT-XL/2's (or the tiny) config."""
    from diffusers import DiTTransformer2DModel

    from diffit_hf import DiffiTModel, DiTModel, create_model
    from diffit_hf.models.presets import preset_config

    if model == "diffusers":
        cfg = TINY if tiny else preset_config("DiT-XL/2")[1]
        return DiTTransformer2DModel(
            num_attention_heads=cfg["num_attention_heads"], attention_head_dim=cfg["attention_head_dim"],
            in_channels=cfg["in_channels"], out_channels=2 * cfg["in_channels"], num_layers=cfg["num_layers"],
            sample_size=cfg.get("sample_size", 32), patch_size=cfg["patch_size"],
            num_embeds_ada_norm=cfg["num_classes"],
        )
    if tiny:
        return (DiTModel if model == "dit" else DiffiTModel)(**TINY)
    return create_model(MODELS[model])


def macs_per_sample(model: str, tiny: bool) -> int:
    from diffit_hf import count_macs

    ours = "dit" if model == "diffusers" else model  # diffusers' DiT has our DiT's GEMMs
    return count_macs(build(ours, tiny) if tiny else MODELS[ours])


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(net, forward, batch: int, device):
    """A closure for one train step of `net` through `forward` (bf16 autocast forward, MSE against a fixed random
    target, backward, fused AdamW as `train_latent.py` steps it) on fixed random inputs, and those inputs (x, t, y)."""
    import torch

    from diffit_hf.training.runtime import adamw

    opt = adamw(net.parameters(), 1e-4)
    cfg = net.config
    num_classes = cfg.get("num_classes", cfg.get("num_embeds_ada_norm", 0))
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    target = torch.randn(batch, 2 * cfg.in_channels, cfg.sample_size, cfg.sample_size, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = forward(x, t, y).sample
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step, (x, t, y)


def train_at(model: str, mode: str, batch: int, steps: int, device, tiny: bool) -> dict:
    """Cold first step, then the median of `steps` timed steps at one batch size."""
    import torch

    torch.manual_seed(0)
    with torch.device(device):
        net = build(model, tiny).train()
    if "gc" in mode.split("+"):
        net.enable_gradient_checkpointing()
    if "flex" in mode.split("+"):
        from diffit_hf.models import layers

        layers.biased_attention_backend = "flex"
    step, _ = train_step(net, torch.compile(net) if mode.startswith("compiled") else net, batch, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step()  # cold: allocations, AdamW state, and the compile of compiled modes
    sync(device)
    cold = time.perf_counter() - start
    step()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    sec = median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"batch": batch, "sec_per_step": sec, "steps_per_s": 1 / sec, "samples_per_s": batch / sec,
            "cold_step_s": cold, "peak_memory_gib": peak}


def train_worker(model: str, mode: str, batches: list[int], steps: int, device: str, tiny: bool) -> dict:
    """The largest batch of `batches` that fits (tried largest first)."""
    import torch

    device = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    for batch in sorted(batches, reverse=True):
        try:
            return train_at(model, mode, batch, steps, device, tiny)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()  # this attempt's tensors died with train_at's frame
            torch._dynamo.reset()
    return {"batch": None, "error": f"out of memory at every batch size in {batches}"}


def sampling_worker(batch: int, steps: int, repeats: int, device: str, tiny: bool) -> dict:
    """images/s of diffusers' DiTPipeline and DiffiTPipeline on the same DiT weights (and DiffiTPipeline with
    DiffiT-XL/2), bf16, same VAE architecture, DDIM scheduler, steps and guidance scale 4."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline

    from diffit_hf import DiffiTPipeline
    from diffit_hf.models.conversion import convert_diffusers_dit

    device = torch.device(device)
    torch.manual_seed(0)
    vae_cfg = (dict(block_out_channels=(8, 16), norm_num_groups=8, sample_size=16) if tiny else
               dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=256))
    levels = len(vae_cfg["block_out_channels"])
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_cfg,
                        down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels)
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    diffusers_dit = build("diffusers", tiny)
    # diffusers' DiT keeps one embedder per block (equal copies in released weights): make them equal, as in a
    # converted checkpoint, so that both pipelines run the very same weights
    state = diffusers_dit.state_dict()
    prefix = "transformer_blocks.0.norm1.emb."
    shared = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    diffusers_dit.load_state_dict({k: shared[k.split(".norm1.emb.", 1)[1]] if ".norm1.emb." in k else v
                                   for k, v in state.items()})
    dit, diffit = ("tiny DiT", "tiny DiffiT") if tiny else ("DiT-XL/2", "DiffiT-XL/2")
    pipes = {
        f"diffusers DiTPipeline ({dit})": DiTPipeline(transformer=diffusers_dit, vae=vae, scheduler=scheduler),
        f"DiffiTPipeline ({dit})": DiffiTPipeline(transformer=convert_diffusers_dit(diffusers_dit), vae=vae,
                                                  scheduler=scheduler),
        f"DiffiTPipeline ({diffit})": DiffiTPipeline(transformer=build("diffit", tiny), vae=vae, scheduler=scheduler),
    }
    labels = [i % 10 for i in range(batch)]
    results = {}
    times = {name: [] for name in pipes}
    for pipe in pipes.values():
        pipe.to(device, torch.bfloat16)
        pipe.set_progress_bar_config(disable=True)
    for i in range(repeats + 1):  # round 0 is the warm-up; then pipelines alternate
        for name, pipe in pipes.items():
            sync(device)
            start = time.perf_counter()
            pipe(class_labels=labels, num_inference_steps=steps, guidance_scale=4.0, output_type="np",
                 generator=torch.Generator(device).manual_seed(i))
            sync(device)
            if i:
                times[name].append(time.perf_counter() - start)
    for name, ts in times.items():
        sec = median(ts)
        results[name] = {"sec_per_batch": sec, "images_per_s": batch / sec}
    return {"batch": batch, "steps": steps, "guidance_scale": 4.0, "scheduler": "DDIM", "pipelines": results}


def profile_worker(batch: int, top: int, device: str, tiny: bool) -> dict:
    """torch.profiler over one eager train step (as `train_at`'s, at `batch`) and one sampling step (the model's
    forward on a classifier-free-guidance batch of 2 x `batch`, bf16, no gradients) of DiT-XL/2 and DiffiT-XL/2,
    after two warm-up calls each: the `top` ops by self time on the device (CUDA kernels on a GPU, CPU time on a
    CPU), with their share of the step's total."""
    import torch

    device = torch.device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    models = {("tiny " + m if tiny else MODELS[m]): profile_model(m, batch, top, device, tiny)
              for m in ("dit", "diffit")}
    return {"batch": batch, "clock": "device" if device.type == "cuda" else "cpu", "models": models}


def profile_model(model: str, batch: int, top: int, device, tiny: bool) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    torch.manual_seed(0)
    with torch.device(device):
        net = build(model, tiny)
    train, (x, t, y) = train_step(net, net, batch, device)

    def sample():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, 1000)]))  # + null labels

    phases = {}
    for phase, fn in (("train step", train), ("sampling step", sample)):
        net.train(phase == "train step")
        for _ in range(2):
            fn()
        sync(device)
        with profile(activities=activities) as prof:
            fn()
            sync(device)
        events = sorted((e for e in prof.key_averages() if getattr(e, attr) > 0), key=lambda e: getattr(e, attr),
                        reverse=True)
        total = sum(getattr(e, attr) for e in events)
        phases[phase] = {"total_ms": total / 1e3, "ops": [
            {"op": e.key, "self_ms": getattr(e, attr) / 1e3, "share": getattr(e, attr) / total, "calls": e.count}
            for e in events[:top]]}
    return phases


def run_worker(kind: str, timeout: float, **kwargs) -> dict:
    """One row in a subprocess; a failure or a timeout becomes the row's `error` (the other rows still run: a GPU
    lease is short, and one broken row must not cost the rest)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps({"kind": kind, **kwargs})]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"batch": None, "error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        print(f"{kind} worker {kwargs} failed:\n{out.stderr[-3000:]}", file=sys.stderr, flush=True)
        last = out.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"batch": None, "error": f"failed: {last[0][:200]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def render(payload: dict) -> str:
    peak = payload["bf16_peak_tflops"]
    lines = [f"Note: {note}\n" for note in payload.get("notes", [])]
    lines += [f"Train step on {payload['device']} (bf16 autocast, AdamW; dense bf16 peak "
             f"{f'{peak:.0f} TFLOP/s' if peak else 'unknown'}), torch {payload['torch']}:", "",
             "| model | mode | batch | steps/s | samples/s | peak memory (GiB) | MFU | first step (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in payload["train"]:
        if r.get("batch") is None:
            lines.append(f"| {r['model']} | {r['mode']} | - | - | - | - | - | {r['error']} |")
            continue
        mem = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['steps_per_s']:.2f} | "
                     f"{r['samples_per_s']:.1f} | {mem} | {mfu} | {r['cold_step_s']:.0f} |")
    ratio = payload.get("dit_over_diffusers")
    if ratio:
        lines += ["", "DiT-XL/2 samples/s, ours / diffusers' at the same mode and batch: "
                  + ", ".join(f"{mode} **{v:.2f}x**" for mode, v in ratio.items())]
    s = payload.get("sampling")
    if s and "error" in s:
        lines += ["", f"Sampling: {s['error']}"]
    elif s:
        lines += ["", f"Sampling, {s['batch']} images, {s['steps']} {s['scheduler']} steps, guidance "
                  f"{s['guidance_scale']}, bf16, VAE decode included (median of alternating runs):", "",
                  "| pipeline | images/s |", "|---|---:|"]
        lines += [f"| {name} | {r['images_per_s']:.2f} |" for name, r in s["pipelines"].items()]
    prof = payload.get("profile")
    if prof and "error" in prof:
        lines += ["", f"Profile: {prof['error']}"]
    elif prof:
        for model, phases in prof["models"].items():
            for phase, p in phases.items():
                lines += ["", f"Profile, {model}, one eager {phase} (batch {prof['batch']}; self {prof['clock']} "
                          f"time, {p['total_ms']:.1f} ms in all):", "", "| op | self ms | share | calls |",
                          "|---|---:|---:|---:|"]
                lines += [f"| `{o['op']}` | {o['self_ms']:.2f} | {o['share']:.1%} | {o['calls']} |" for o in p["ops"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="tiny models (CPU check that the script runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--rows", nargs="+", default=DEFAULT_ROWS,
                        help=f"train rows as model:mode, model in {list(MODELS)}, mode in {list(MODES)}")
    parser.add_argument("--batches", nargs="+", type=int, default=[256, 128, 64, 32],
                        help="train batch sizes to try, largest first; the first that fits is used")
    parser.add_argument("--steps", type=int, default=10, help="timed train steps per row")
    parser.add_argument("--sample-batch", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--no-sampling", action="store_true")
    parser.add_argument("--profile", action="store_true", help=(
        "also profile one eager train step and one sampling step of DiT-XL/2 and DiffiT-XL/2 (torch.profiler)"))
    parser.add_argument("--profile-batch", type=int, default=32, help="--profile: the train step's batch")
    parser.add_argument("--profile-top", type=int, default=15, help="--profile: ops listed per step")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the dense bf16 peak (TFLOP/s)")
    parser.add_argument("--row-timeout", type=float, default=300.0, help="seconds one row may take (then an error)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for the whole run: rows that would start after it are recorded as skipped")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_bench.json",
                        help="JSON path; the markdown table is written next to it")
    args = parser.parse_args()
    if args.worker:
        kwargs = json.loads(args.worker)
        fn = {"train": train_worker, "sampling": sampling_worker, "profile": profile_worker}[kwargs.pop("kind")]
        print(json.dumps(fn(**kwargs)))
        return

    import torch

    rows = []
    for spec in args.rows:  # check every row before any work starts
        model, _, mode = spec.partition(":")
        if model not in MODELS or mode not in MODES:
            parser.error(f"bad --rows entry {spec!r}: expected model:mode with model in {', '.join(MODELS)} and "
                         f"mode in {', '.join(MODES)}.")
        if mode.endswith("+flex") and model != "diffit":
            parser.error(f"bad --rows entry {spec!r}: +flex changes DiffiT's biased attention; only diffit has it.")
        rows.append((model, mode))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    if device == "cpu":
        device_name = cpu_name()
    peak = args.peak_tflops or bf16_peak_tflops(device_name)
    payload = {"device": device_name, "torch": torch.__version__, "tiny": args.tiny, "bf16_peak_tflops": peak,
               "train": [], "dit_over_diffusers": {}, "sampling": None}
    if args.profile:  # first: the profile is what the issue asks of a short GPU lease
        payload["profile"] = run_worker("profile", args.row_timeout, batch=args.profile_batch, top=args.profile_top,
                                        device=device, tiny=args.tiny)
        write(payload, args.output)
    started = time.perf_counter()

    def budget_left() -> float:
        return float("inf") if args.time_budget is None else args.time_budget - (time.perf_counter() - started)

    def time_left() -> float:
        """Seconds the next row may take: the row timeout, or less when the budget is nearly spent."""
        return min(args.row_timeout, budget_left())

    def budget_spent() -> bool:
        return budget_left() < 10

    def sampling() -> None:
        if args.no_sampling or payload["sampling"] is not None:
            return
        if budget_spent():
            payload["sampling"] = {"error": "skipped: time budget spent"}
        else:
            payload["sampling"] = run_worker("sampling", time_left(), batch=args.sample_batch,
                                             steps=args.sample_steps, repeats=args.sample_repeats, device=device,
                                             tiny=args.tiny)
        write(payload, args.output)

    eager_batch = {}
    for model, mode in rows:
        if mode.startswith("compiled"):
            sampling()  # before the first cold compile, the slowest part of the run
        name = "tiny " + model if args.tiny else MODELS[model]
        if budget_spent():
            r = {"batch": None, "error": "skipped: time budget spent"}
        else:
            # compiled rows run at the eager row's batch, so that the two compare at equal work
            batches = [eager_batch[(model, mode.endswith("+gc"))]] if (model, mode.endswith("+gc")) in eager_batch \
                and mode.startswith("compiled") else args.batches
            r = run_worker("train", time_left(), model=model, mode=mode, batches=batches, steps=args.steps,
                           device=device, tiny=args.tiny)
        r = {"model": name, "key": model, "mode": mode, **r}
        if r["batch"] is not None:
            if mode.startswith("eager"):
                eager_batch[(model, mode.endswith("+gc"))] = r["batch"]
            flops = 6 * macs_per_sample(model, args.tiny) * r["samples_per_s"]
            r["train_tflops"] = flops / 1e12
            r["mfu"] = flops / (peak * 1e12) if peak else None
            mfu = "-" if r["mfu"] is None else f"{r['mfu']:.1%}"
            print(f"  {name} {mode}: batch {r['batch']}, {r['samples_per_s']:.1f} samples/s, MFU {mfu}", flush=True)
        else:
            print(f"  {name} {mode}: {r['error']}", flush=True)
        payload["train"].append(r)
        by_key = {(r["key"], r["mode"]): r for r in payload["train"] if r.get("batch")}
        payload["dit_over_diffusers"] = {
            mode: by_key[("dit", mode)]["samples_per_s"] / by_key[("diffusers", mode)]["samples_per_s"]
            for mode in MODES if ("dit", mode) in by_key and ("diffusers", mode) in by_key
            and by_key[("dit", mode)]["batch"] == by_key[("diffusers", mode)]["batch"]}
        write(payload, args.output)  # after every row: a run cut short keeps what it measured
    sampling()  # writes the results when it runs; every train row already did
    print("\n" + render(payload))
    print(f"\nwrote {args.output} and {args.output.with_suffix('.md')}")


def write(payload: dict, output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(payload, indent=2) + "\n")
    output.with_suffix(".md").write_text(render(payload) + "\n")


if __name__ == "__main__":
    main()
