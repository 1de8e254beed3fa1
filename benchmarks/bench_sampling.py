"""Sampling speed (DiffiTPipeline vs diffusers' DiTPipeline) and train-step model FLOPs utilisation, in one run.

    python benchmarks/bench_sampling.py            # writes benchmarks/results/bench_sampling.json and .md
    python benchmarks/bench_sampling.py --quick

1. Sampling: a diffusers `DiTTransformer2DModel` (random weights, set to compute what the original DiT computes:
   frequency shift 0, LayerNorm eps 1e-6, tied per-block embedders) and our `DiTModel` converted from it, each in its
   own pipeline with the same VAE, DDIM scheduler, steps, labels, guidance (all channels, as DiTPipeline) and
   seed. The images are checked equal first; then the two pipelines alternate calls and the median is reported.
2. MFU: the measured matmul peak of this machine (fp32, bf16), and the model FLOPs of a DiT-S/2 train step at 32x32x4
   (3 x forward MACs x 2, attention included, counted analytically) divided by the step time, for both
   implementations.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import alternate, make_step  # beside this script: a script's folder is sys.path[0]

RESULTS = Path(__file__).parent / "results"


def exact_diffusers_dit(size: int, depth: int = 12, heads: int = 6, head_dim: int = 64, patch: int = 2):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    model = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
                                  out_channels=8, num_layers=depth, sample_size=size, patch_size=patch,
                                  num_embeds_ada_norm=1000, norm_eps=1e-6).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.02)
        first = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks:
            block.norm1.emb.load_state_dict(first.state_dict())
            block.norm1.emb.time_proj.downscale_freq_shift = 0
    return model


def small_vae(size: int):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=16, sample_size=2 * size).eval()


def bench_sampling(size: int, batch: int, steps: int, repeats: int, guidance: float) -> dict:
    from diffusers import DDIMScheduler, DiTPipeline

    from diffit_hf import DiffiTPipeline, convert_diffusers_dit, create_model

    reference = exact_diffusers_dit(size)
    ours = convert_diffusers_dit(reference).eval()
    vae = small_vae(size)
    theirs_pipe = DiTPipeline(transformer=reference, vae=vae, scheduler=DDIMScheduler())
    ours_pipe = DiffiTPipeline(transformer=ours, vae=vae, scheduler=DDIMScheduler())
    torch.manual_seed(0)
    diffit = create_model("DiffiT-S/2", sample_size=size).eval()  # equal GMACs to DiT-S/2; random weights
    with torch.no_grad():
        for p in diffit.parameters():
            p.normal_(std=0.02)
    diffit_pipe = DiffiTPipeline(transformer=diffit, vae=vae, scheduler=DDIMScheduler())
    for pipe in (theirs_pipe, ours_pipe, diffit_pipe):
        pipe.set_progress_bar_config(disable=True)
    labels = list(range(batch))

    def run_theirs():
        return theirs_pipe(labels, guidance_scale=guidance, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(0), output_type="np").images

    def run_ours():
        return ours_pipe(labels, guidance_scale=guidance, num_inference_steps=steps,
                         generator=torch.Generator().manual_seed(0), output_type="np").images

    def run_diffit():
        return diffit_pipe(labels, guidance_scale=guidance, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(0), output_type="np").images

    a, b = run_theirs(), run_ours()  # also the warm-up
    run_diffit()
    max_diff = float(abs(a - b).max())
    med = alternate({"diffusers": run_theirs, "diffit_hf": run_ours, "diffit": run_diffit}, repeats, warmup=False)
    return {"latent": f"{size}x{size}x4", "batch": batch, "steps": steps, "guidance_scale": guidance,
            "scheduler": "DDIM", "max_abs_image_diff": max_diff,
            "diffusers_images_per_s": batch / med["diffusers"], "diffit_hf_images_per_s": batch / med["diffit_hf"],
            "diffit_s2_images_per_s": batch / med["diffit"],
            "speedup": med["diffusers"] / med["diffit_hf"]}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square matmul (the best of `repeats`), the ceiling a train step's GEMMs can reach."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_mfu(batch: int, steps: int) -> list[dict]:
    from diffit_hf import count_macs

    flops_per_step = 3 * 2 * count_macs("DiT-S/2") * batch  # forward + backward (2x forward), MAC = 2 FLOPs
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for precision in ("fp32", "bf16"):
        fns = {impl: make_step(impl, "DiT-S/2", 32, batch, precision) for impl in ("diffusers", "diffit_hf")}
        row = {"precision": precision, "batch": batch, "matmul_peak_gflops": peaks[precision] / 1e9,
               "model_gflop_per_step": flops_per_step / 1e9}
        for impl, sec in alternate(fns, steps).items():
            row[f"{impl}_sec_per_step"] = sec
            row[f"{impl}_mfu"] = flops_per_step / sec / peaks[precision]
        rows.append(row)
    return rows


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::linear", "aten::matmul")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu",
                 "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_step(impl: str, precision: str, batch: int) -> dict:
    """Where a DiT-S/2 32x32x4 train step spends its time (torch.profiler, self CPU time by op)."""
    from torch.profiler import ProfilerActivity, profile

    fn = make_step(impl, "DiT-S/2", 32, batch, precision)
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows) or 1
    gemm = sum(t for k, t in rows if k in GEMM_OPS)
    attention = sum(t for k, t in rows if k in ATTENTION_OPS)
    top = sorted(rows, key=lambda r: -r[1])[:8]
    return {"impl": impl, "precision": precision, "gemm_share": gemm / total, "attention_share": attention / total,
            "other_share": 1 - (gemm + attention) / total,
            "top_ops": [{"op": k, "share": t / total} for k, t in top]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)

    sampling = [bench_sampling(size, batch=8, steps=10 if args.quick else 25, repeats=2 if args.quick else 5,
                               guidance=4.0) for size in (8, 32)]
    mfu = bench_mfu(batch=32, steps=2 if args.quick else 4)
    targets = {"sampling_speedup": 1.2, "mfu_fp32": 0.75, "mfu_bf16": 0.65}
    for r in mfu:  # how far from the target, and why (profile of our step)
        r["target_mfu"] = targets["mfu_" + r["precision"]]
        r["shortfall"] = max(0.0, r["target_mfu"] - r["diffit_hf_mfu"])
        r["profile"] = profile_step("diffit_hf", r["precision"], 32)

    lines = ["Sampling: DiffiTPipeline vs diffusers DiTPipeline, DiT-S/2 (converted weights), DDIM, batch 8, "
             f"cfg 4.0, {args.threads} threads (median images/s):", "",
             "| latent | steps | diffusers | diffit_hf | speedup | max image diff | DiffiT-S/2 (DiffiTPipeline) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in sampling:
        lines.append(f"| {r['latent']} | {r['steps']} | {r['diffusers_images_per_s']:.2f} | "
                     f"{r['diffit_hf_images_per_s']:.2f} | **{r['speedup']:.2f}x** | {r['max_abs_image_diff']:.1e} | "
                     f"{r['diffit_s2_images_per_s']:.2f} |")
    lines += ["", "Train-step model FLOPs utilisation, DiT-S/2 at 32x32x4, batch 32 (model FLOPs / step time / "
              "measured matmul peak):", "",
              "| precision | matmul peak (GFLOP/s) | diffusers MFU | diffit_hf MFU | target |",
              "|---|---:|---:|---:|---:|"]
    for r in mfu:
        lines.append(f"| {r['precision']} | {r['matmul_peak_gflops']:.0f} | {r['diffusers_mfu']:.0%} | "
                     f"{r['diffit_hf_mfu']:.0%} | {targets['mfu_' + r['precision']]:.0%} |")
    lines += ["", "Where our train step spends its time (torch.profiler, self CPU time):", "",
              "| precision | GEMMs | attention (SDPA) | everything else | largest ops |", "|---|---:|---:|---:|---|"]
    for r in mfu:
        p = r["profile"]
        top = ", ".join(f"{o['op'].removeprefix('aten::')} {o['share']:.0%}" for o in p["top_ops"][:4])
        lines.append(f"| {r['precision']} | {p['gemm_share']:.0%} | {p['attention_share']:.0%} | "
                     f"{p['other_share']:.0%} | {top} |")
    table = "\n".join(lines)
    print(table)
    payload = {"sampling": sampling, "mfu": mfu, "targets": targets, "threads": args.threads, "quick": args.quick}
    (RESULTS / "bench_sampling.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "bench_sampling.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS / 'bench_sampling.json'} and {RESULTS / 'bench_sampling.md'}")


if __name__ == "__main__":
    main()
