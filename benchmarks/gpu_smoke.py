"""The Python steps of benchmarks/gpu_smoke.sh: a small synthetic latent cache, weight comparisons between runs,
the training-memory table of DiT-XL/2 and DiffiT-XL/2, and the summary written to benchmarks/results/.

    python benchmarks/gpu_smoke.py cache WORK/latents
    python benchmarks/gpu_smoke.py compare RUN_A RUN_B --atol 1e-5 --name ddp_vs_fsdp --log WORK/checks.jsonl
    python benchmarks/gpu_smoke.py memory --log WORK/checks.jsonl [--tiny]
    python benchmarks/gpu_smoke.py summary WORK/checks.jsonl benchmarks/results/gpu_smoke_<device>
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from common import describe  # beside this script: a script's folder is sys.path[0]

PARTS = ("checkpoints/checkpoint-0000004/transformer", "checkpoints/checkpoint-0000008/transformer",
         "checkpoints/checkpoint-0000008/transformer_ema", "transformer")


def make_cache(out: Path, images: int = 256) -> None:
    """Seeded random 16x16 grayscale images of 10 classes through a small untrained VAE -> 4x8x8 latents (the data
    only has to exercise the training code; no download on a GPU machine without internet)."""
    import numpy as np
    from datasets import ClassLabel, Dataset, Features, Image
    from diffusers import AutoencoderKL

    from diffit_hf.data import encode_to_cache

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=16, scaling_factor=0.5).eval()
    vae.save_pretrained(out.parent / "vae")
    rng = np.random.default_rng(0)
    features = Features({"image": Image(), "label": ClassLabel(names=[f"class{i}" for i in range(10)])})
    data = Dataset.from_dict({"image": list(rng.integers(0, 256, (images, 16, 16), dtype=np.uint8)),
                              "label": [i % 10 for i in range(images)]}, features=features)
    encode_to_cache(vae, data, out, resolution=16, grayscale=True, vae_id=str(out.parent / "vae"), shard_size=128,
                    progress=False)


def compare(a: Path, b: Path) -> float:
    """The largest absolute difference between the weights (model, EMA, exported pipeline) of two runs."""
    from safetensors.torch import load_file

    worst = 0.0
    for part in PARTS:
        wa = load_file(str(a / part / "diffusion_pytorch_model.safetensors"))
        wb = load_file(str(b / part / "diffusion_pytorch_model.safetensors"))
        if wa.keys() != wb.keys():
            raise SystemExit(f"{a / part} and {b / part} hold different tensors")
        worst = max(worst, *((wa[k].float() - wb[k].float()).abs().max().item() for k in wa))
    return worst


def peak_memory_row(name: str, checkpointing: bool, batch: int, steps: int, tiny: bool, device: torch.device) -> dict:
    """Peak memory and step time of AdamW training steps (forward, backward, update) at 256x256 (4x32x32 latents)."""
    from diffit_hf import create_model

    overrides = dict(num_classes=1000, sample_size=32)
    if tiny:
        overrides.update(num_layers=2, num_attention_heads=2, attention_head_dim=16, sample_size=8)
    torch.manual_seed(0)
    model = create_model(name, **overrides).to(device).train()
    if checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    size = model.config.sample_size
    x = torch.randn(batch, 4, size, size, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(x, t, y).sample.float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak, what = torch.cuda.max_memory_allocated(device) / 2**30, "GPU max_memory_allocated"
    else:
        peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS (all rows so far)"
    params = sum(p.numel() for p in model.parameters())
    del model, optimizer
    return {"model": name, "gradient_checkpointing": checkpointing, "batch": batch, "params": params,
            "peak_gib": round(peak, 3), "measured": what, "step_s": round(min(times[1:] or times), 4),
            "precision": "bf16 autocast, fp32 weights + AdamW", "tiny": tiny}


def log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))


def summary(records: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": describe(), "records": records}
    (out / "gpu_smoke.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [f"# gpu_smoke ({payload['machine'].get('gpu') or payload['machine'].get('cpu')})", "",
             "| check | result | detail |", "|---|---|---|"]
    for r in records:
        if r["kind"] == "memory":
            detail = (f"{r['model']}, batch {r['batch']}, checkpointing {r['gradient_checkpointing']}: "
                      f"{r['peak_gib']} GiB ({r['measured']}), {r['step_s']} s/step")
            lines.append(f"| memory | ok | {detail} |")
        else:
            lines.append(f"| {r['name']} | {'ok' if r['ok'] else 'FAILED'} | {r['detail']} |")
    (out / "gpu_smoke.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cache")
    p.add_argument("out", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--atol", type=float, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--log", type=Path, required=True)
    p = sub.add_parser("check")  # a run that must have finished with a finite loss
    p.add_argument("run", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--log", type=Path, required=True)
    p = sub.add_parser("memory")
    p.add_argument("--models", default="DiT-XL/2,DiffiT-XL/2")
    p.add_argument("--batch", type=int, default=32, help="per GPU (DiT's global 256 on 8 GPUs)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="2-block models at batch 2 (CPU smoke of this code)")
    p.add_argument("--log", type=Path, required=True)
    p = sub.add_parser("summary")
    p.add_argument("log", type=Path)
    p.add_argument("out", type=Path)
    args = parser.parse_args()

    if args.command == "cache":
        make_cache(args.out)
    elif args.command == "compare":
        diff = compare(args.a, args.b)
        ok = diff <= args.atol
        log(args.log, {"kind": "check", "name": args.name, "ok": ok,
                       "detail": f"max abs difference {diff:.3g} (allowed {args.atol:g}): {args.a.name} vs "
                                 f"{args.b.name}"})
        if not ok:
            raise SystemExit(f"{args.name}: max weight difference {diff:.3g} > {args.atol:g}")
    elif args.command == "check":
        result = json.loads((args.run / "train_results.json").read_text())
        loss = result.get("final_loss")
        ok = loss is not None and loss == loss and abs(loss) != float("inf")
        log(args.log, {"kind": "check", "name": args.name, "ok": ok,
                       "detail": f"{result['steps']} steps, final loss {loss}, {result['steps_per_s']:.2f} steps/s, "
                                 f"{result['num_processes']} process(es)"})
        if not ok:
            raise SystemExit(f"{args.name}: final loss {loss}")
    elif args.command == "memory":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        batch = 2 if args.tiny else args.batch
        for name in args.models.split(","):
            for checkpointing in (False, True):
                log(args.log, {"kind": "memory", **peak_memory_row(name, checkpointing, batch, args.steps,
                                                                  args.tiny, device)})
    else:
        summary([json.loads(line) for line in args.log.read_text().splitlines()], args.out)


if __name__ == "__main__":
    main()
