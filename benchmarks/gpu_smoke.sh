#!/usr/bin/env bash
# What only a GPU machine can prove, in one short run (about 10 minutes on one H100, most of it the XL memory rows):
#   1. DDP vs FSDP2 (FULL_SHARD) equality of the weights and EMA after 8 steps (tiny model, same seed, fp32, no TF32)
#   2. FSDP2 SHARD_GRAD_OP stopped at step 4 and resumed (with gradient checkpointing): equal to the run straight
#      through
#   3. bf16 mixed precision under DDP and FSDP2 (finite loss, weights close to fp32)
#   4. --compile under DDP and FSDP2, and a compiled DDP run stopped at step 4 and resumed: equal to one run
#   5. peak training memory of DiT-XL/2 and DiffiT-XL/2 (batch 32, 4x32x32 latents, bf16 autocast, AdamW), with and
#      without gradient checkpointing
# Writes benchmarks/results/gpu_smoke_<device>/gpu_smoke.{json,md} and the logs; exits non-zero on a failed check.
#
#   bash benchmarks/gpu_smoke.sh            # a GPU machine: uses min(#GPUs, 2) processes (1 GPU: world size 1)
#   bash benchmarks/gpu_smoke.sh --tiny     # CPU (gloo), 2 processes, tiny models: the same code paths (CI test)
#
# Environment: GPU_SMOKE_OUT (results folder), GPU_SMOKE_COMPILE=1 (compile also in --tiny mode; 40-60 s per
# process on CPU), GPU_SMOKE_MEMORY=0 (skip the memory table), GPU_SMOKE_QUICK=1 (only the FSDP run of 1, and 5),
# GPU_SMOKE_NPROC (processes per run). The CI test: GPU_SMOKE_QUICK=1 GPU_SMOKE_NPROC=1 ... --tiny (world size 1,
# as on a one-GPU machine; two processes are tested in tests/scripts/test_distributed.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
WORK=$(mktemp -d -t gpu_smoke.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
CHECKS="$WORK/checks.jsonl"
: > "$CHECKS"

if [[ $TINY == 1 ]]; then
    export ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1
    NPROC=${GPU_SMOKE_NPROC:-2}
    DEVICE=cpu-tiny
    FSDP_ENTRY=(-m diffit_hf.training.cpu_fsdp training/train_latent.py)  # accelerate's FSDP2 path, allowed on CPU
    COMPILE=${GPU_SMOKE_COMPILE:-0}
    FSDP_ATOL=1e-6; RESUME_ATOL=0
else
    NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
    [[ $NGPU -ge 1 ]] || { echo "no GPU: run with --tiny on CPU" >&2; exit 2; }
    NPROC=${GPU_SMOKE_NPROC:-$(( NGPU >= 2 ? 2 : 1 ))}
    DEVICE=$($PY -c "import torch; print(torch.cuda.get_device_name().replace(' ', '-'))")
    FSDP_ENTRY=(training/train_latent.py)
    COMPILE=${GPU_SMOKE_COMPILE:-1}
    # NCCL's reduce-scatter and all-reduce sum in different orders, and Adam divides by sqrt(v): not bit-equal
    FSDP_ATOL=1e-4; RESUME_ATOL=1e-5
fi
# bf16: FSDP2 computes with bf16 copies of the weights (MixedPrecisionPolicy), DDP under autocast; 8 steps at
# lr 1e-3 move a weight by up to ~8e-3, and the two differed by 2.7e-4 and 5e-4 in two CPU runs (measured)
BF16_ATOL=2e-3
QUICK=${GPU_SMOKE_QUICK:-0}
OUT=${GPU_SMOKE_OUT:-benchmarks/results/gpu_smoke_$DEVICE}
mkdir -p "$OUT"
PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
MULTI=(); [[ $NPROC -gt 1 ]] && MULTI=(--multi_gpu)
COMMON=(--latents "$WORK/latents" --model DiT-S/2 --model-config '{"num_layers": 2, "num_attention_heads": 2,
        "attention_head_dim": 16}' --batch-size 16 --learning-rate 1e-3 --max-steps 8 --checkpointing-steps 4
        --validation-steps 8 --validation-per-class 1 --validation-inference-steps 2 --log-every 4 --no-allow-tf32)

ddp() {  # ddp NAME [train args]
    local name=$1; shift
    echo "== $name"
    $PY -m accelerate.commands.launch "${MULTI[@]}" --num_processes $NPROC --num_machines 1 --main_process_port "$PORT" \
        --mixed_precision no --dynamo_backend no training/train_latent.py "${COMMON[@]}" --output-dir "$WORK/$name" \
        "$@" >> "$OUT/$name.log" 2>&1 || { tail -40 "$OUT/$name.log"; exit 1; }
}
fsdp() {  # fsdp NAME true|false(reshard after forward: FULL_SHARD|SHARD_GRAD_OP) [train args]
    local name=$1 reshard=$2; shift 2
    echo "== $name"
    $PY -m accelerate.commands.launch --use_fsdp --fsdp_version 2 --fsdp_reshard_after_forward "$reshard" \
        --num_processes $NPROC --num_machines 1 --main_process_port "$PORT" --mixed_precision no --dynamo_backend no \
        "${FSDP_ENTRY[@]}" "${COMMON[@]}" --output-dir "$WORK/$name" "$@" >> "$OUT/$name.log" 2>&1 \
        || { tail -40 "$OUT/$name.log"; exit 1; }
    ls -d "$WORK/$name"/checkpoints/checkpoint-*/pytorch_model_fsdp_0 > /dev/null \
        || { echo "$name: no sharded checkpoint, FSDP did not engage" >&2; exit 1; }
}
rm -f "$OUT"/*.log

$PY benchmarks/gpu_smoke.py cache "$WORK/latents"
# 1. DDP vs FSDP
fsdp fsdp true
$PY benchmarks/gpu_smoke.py check "$WORK/fsdp" --name fsdp --log "$CHECKS"
if [[ $QUICK != 1 ]]; then
ddp ddp
$PY benchmarks/gpu_smoke.py compare "$WORK/ddp" "$WORK/fsdp" --atol $FSDP_ATOL --name ddp_vs_fsdp --log "$CHECKS"
# 2. SHARD_GRAD_OP, stopped after its step-4 checkpoint, resumed with gradient checkpointing
fsdp fsdp_resumed false --max-steps 4
fsdp fsdp_resumed false --resume-from-checkpoint latest --gradient-checkpointing
$PY benchmarks/gpu_smoke.py compare "$WORK/fsdp" "$WORK/fsdp_resumed" --atol $RESUME_ATOL --name fsdp_resume \
    --log "$CHECKS"
# 3. bf16
ddp ddp_bf16 --mixed-precision bf16
fsdp fsdp_bf16 true --mixed-precision bf16
$PY benchmarks/gpu_smoke.py check "$WORK/fsdp_bf16" --name fsdp_bf16 --log "$CHECKS"
$PY benchmarks/gpu_smoke.py compare "$WORK/ddp_bf16" "$WORK/fsdp_bf16" --atol $BF16_ATOL --name ddp_vs_fsdp_bf16 \
    --log "$CHECKS"
# 4. torch.compile
if [[ $COMPILE == 1 ]]; then
    ddp ddp_compile --compile
    fsdp fsdp_compile true --compile
    $PY benchmarks/gpu_smoke.py check "$WORK/ddp_compile" --name ddp_compile --log "$CHECKS"
    $PY benchmarks/gpu_smoke.py check "$WORK/fsdp_compile" --name fsdp_compile --log "$CHECKS"
    # compiled, stopped after its step-4 checkpoint and resumed: equal to the compiled run straight through
    ddp ddp_compile_resumed --compile --max-steps 4
    ddp ddp_compile_resumed --compile --resume-from-checkpoint latest
    $PY benchmarks/gpu_smoke.py compare "$WORK/ddp_compile" "$WORK/ddp_compile_resumed" --atol $RESUME_ATOL \
        --name ddp_compile_resume --log "$CHECKS"
fi
fi
# 5. memory of the XL models
if [[ ${GPU_SMOKE_MEMORY:-1} == 1 ]]; then
    echo "== memory"
    $PY benchmarks/gpu_smoke.py memory --log "$CHECKS" $([[ $TINY == 1 ]] && echo --tiny)
fi
$PY benchmarks/gpu_smoke.py summary "$CHECKS" "$OUT"
