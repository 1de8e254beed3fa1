"""Building blocks shared by DiT and DiffiT: patchify/unpatchify, attention, MLP, final layer, weight init.

Attention and the MLP are small hand-written modules rather than diffusers' `Attention`/`FeedForward`: a fused qkv
projection (the original DiT layout, one GEMM instead of three) and a direct `F.scaled_dot_product_attention` call
keep per-layer overhead low, which dominates at the small token counts DiT trains at.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: x * (1 + scale) + shift, with shift/scale broadcast over tokens."""
    return torch.addcmul(shift, x, 1 + scale)


#################################################################################
#                              Patchify / unpatchify                            #
#################################################################################


def token_grid(sample_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(grid_h, grid_w) of tokens for a square or (height, width) sample size; ValueError if not divisible."""
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    if height % patch_size or width % patch_size:
        raise ValueError(f"sample_size {sample_size} is not divisible by patch_size={patch_size}.")
    return height // patch_size, width // patch_size


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens: (N, C, H, W) -> (N, H/p * W/p, D)."""

    def __init__(self, in_channels: int, hidden_size: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


def unpatchify(x: torch.Tensor, patch_size: int, grid_size: tuple[int, int], channels: int) -> torch.Tensor:
    """(N, T, p*p*C) -> (N, C, H, W) for a (grid_h, grid_w) token grid, square or not."""
    grid_h, grid_w = grid_size
    p = patch_size
    x = x.reshape(x.shape[0], grid_h, grid_w, p, p, channels)  # (N, h, w, p, q, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (N, C, h, p, w, q)
    return x.reshape(x.shape[0], channels, grid_h * p, grid_w * p)


def window_partition(x: torch.Tensor, grid_size: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """Row-major tokens of a grid -> non-overlapping windows: (N, H*W, C) -> (N * nW, wh*ww, C)."""
    (h, w), (wh, ww) = grid_size, window
    if h % wh or w % ww:
        raise ValueError(f"Token grid {h}x{w} is not divisible by the attention window {wh}x{ww}.")
    n, _, c = x.shape
    x = x.view(n, h // wh, wh, w // ww, ww, c).transpose(2, 3)  # (N, h/wh, w/ww, wh, ww, C)
    return x.reshape(n * (h // wh) * (w // ww), wh * ww, c)


def window_merge(x: torch.Tensor, grid_size: tuple[int, int], window: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition`: (N * nW, wh*ww, C) -> (N, H*W, C)."""
    (h, w), (wh, ww) = grid_size, window
    c = x.shape[-1]
    x = x.view(-1, h // wh, w // ww, wh, ww, c).transpose(2, 3)  # (N, h/wh, wh, w/ww, ww, C)
    return x.reshape(-1, h * w, c)


#################################################################################
#                                Attention and MLP                              #
#################################################################################


# Which kernel computes attention with an additive bias (DiffiT's relative position bias): "auto" picks per call
# (`pick_biased_attention`), the others force one (benchmarks and tests compare them); "flex" is opt-in.
BIASED_ATTENTION_BACKENDS = ("auto", "sdpa", "explicit", "cpu_flash", "flex")
biased_attention_backend = "auto"
# Elements of the (chunk, H, Tq, Tk) score block the CPU flash backward recomputes at a time (4 MiB in fp32: it stays
# in cache, where the unfused path streams the whole (N, H, Tq, Tk) tensor through memory several times).
CPU_FLASH_BACKWARD_BLOCK = 1 << 20


# Which kernel computes attention without a bias (DiT's): "auto" picks per call (`pick_attention`), "sdpa" and
# "explicit" force one (benchmarks and tests compare them).
ATTENTION_BACKENDS = ("auto", "sdpa", "explicit")
attention_backend = "auto"


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v written out: q (N, H, Tq, d), k/v (N, H, Tk, d), optional bias broadcastable
    to (N, H, Tq, Tk), never expanded over the batch. The reference formula, and the bf16 CPU path."""
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2))  # (N, H, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    return torch.matmul(scores.softmax(dim=-1), v)  # (N, H, Tq, d)


def low_precision_on_cpu(q: torch.Tensor) -> bool:
    """bf16/fp16 on a CPU: where torch's fused flash-attention kernel is slower than the explicit formula, with a
    bias or without (`pick_attention`, `pick_biased_attention`)."""
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)


def pick_attention(q: torch.Tensor) -> str:
    """The kernel for one attention call without a bias: `attention_backend` unless it is `"auto"`, which picks
    `"explicit"` for bf16/fp16 on a CPU, where torch's fused flash-attention kernel ran slower than the explicit
    formula at 16 and 256 tokens (forward + backward 4.8x / 2.2x, forward 1.5x / 2.1x: `benchmarks/bench_diffit.py
    speed`), and `"sdpa"` elsewhere."""
    if attention_backend not in ATTENTION_BACKENDS:
        raise ValueError(f"Unknown attention_backend {attention_backend!r}; valid choices are "
                         f"{', '.join(ATTENTION_BACKENDS)}.")
    if attention_backend != "auto":
        return attention_backend
    return "explicit" if low_precision_on_cpu(q) else "sdpa"


class CPUFlashBiasedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + bias) v with a bias that gets a gradient, on a CPU: forward through torch's fused CPU
    flash-attention kernel (which takes the bias as its mask but gives it no gradient), backward written here from
    the saved log-sum-exp, a few samples at a time so that the recomputed scores stay in cache.

    Written because no CPU kernel fuses a bias that needs a gradient: `F.scaled_dot_product_attention` then falls
    back to its math path (bias expanded per sample, bf16 upcast to fp32), and even the three-op explicit formula
    streams (N, H, Tq, Tk) scores, probabilities and their gradients through memory, which trained DiffiT-S/2 at
    0.82x DiT-S/2 (fp32, 256 tokens). q (N, H, Tq, d), k/v (N, H, Tk, d), bias (1 or N, H, Tq, Tk)."""

    @staticmethod
    def forward(ctx, q, k, v, bias):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, attn_mask=bias)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        return out  # (N, H, Tq, d)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, bias, out, lse = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32) if ctx.needs_input_grad[3] else None
        delta = (grad_out * out).sum(-1, keepdim=True, dtype=torch.float32)  # (N, H, Tq, 1): rowsum(dO * O)
        n, heads, tq, _ = q.shape
        chunk = max(1, CPU_FLASH_BACKWARD_BLOCK // (heads * tq * k.shape[2]))
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            b = bias if bias.shape[0] == 1 else bias[s:e]
            # recomputed probabilities P = exp(S - logsumexp), then dS = P * (dO V^T - delta)
            probs = torch.matmul(q[s:e] * scale, k[s:e].transpose(-1, -2)).add_(b).sub_(lse[s:e, ..., None]).exp_()
            grad_v[s:e] = torch.matmul(probs.transpose(-1, -2).to(v.dtype), grad_out[s:e])
            grad_scores = torch.matmul(grad_out[s:e], v[s:e].transpose(-1, -2)).sub_(delta[s:e]).mul_(probs)
            if grad_bias is not None:
                if bias.shape[0] == 1:
                    grad_bias[0] += grad_scores.sum(0)
                else:
                    grad_bias[s:e] = grad_scores
            grad_scores = grad_scores.mul_(scale).to(q.dtype)
            grad_q[s:e] = torch.matmul(grad_scores, k[s:e])
            grad_k[s:e] = torch.matmul(grad_scores.transpose(-1, -2), q[s:e])
        return grad_q, grad_k, grad_v, None if grad_bias is None else grad_bias.to(bias.dtype)


def flex_biased_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The same attention through `torch.nn.attention.flex_attention`, the bias added in its `score_mod`: fused, no
    (N, H, Tq, Tk) tensor in memory, the bias gradient accumulated inside the kernel. q (N, H, Tq, d), k/v
    (N, H, Tk, d), bias (H, Tq, Tk), (1, H, Tq, Tk) or (N, H, Tq, Tk).

    Opt-in (`biased_attention_backend = "flex"`), for CUDA under `torch.compile`: eager flex_attention runs an
    unfused reference, and torch's CPU flex_attention has no backward. "auto" does not pick it: its speed on a GPU
    has not been measured yet (`benchmarks/gpu_bench.sh` row `diffit:compiled+flex`)."""
    from torch.nn.attention.flex_attention import flex_attention

    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or bias.requires_grad):
        raise NotImplementedError(
            "biased_attention_backend='flex' cannot train on a CPU (torch's flex_attention has no CPU backward); "
            f"valid choices there are {', '.join(b for b in BIASED_ATTENTION_BACKENDS if b != 'flex')}.")
    if bias.dim() == 4 and bias.shape[0] == 1:
        bias = bias[0]
    if bias.dim() == 3:
        def add_bias(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]
    else:
        def add_bias(score, b, h, q_idx, kv_idx):
            return score + bias[b, h, q_idx, kv_idx]
    return flex_attention(q, k, v, score_mod=add_bias)  # (N, H, Tq, d)


def pick_biased_attention(q: torch.Tensor, bias: torch.Tensor) -> str:
    """The kernel for one biased attention call: `biased_attention_backend` unless it is `"auto"`, which picks, as
    measured on the team's CPUs (`benchmarks/bench_diffit.py`): on a CPU, `"cpu_flash"` (`CPUFlashBiasedAttention`)
    to train in fp32 with a learnable bias, `"explicit"` in bf16/fp16 (CPU flash attention in bf16 was slower than
    it, training and sampling alike), otherwise `"sdpa"`, whose fused kernels take a 4D bias (CPU flash attention
    for fp32 sampling; CUDA memory-efficient attention, bias gradient included)."""
    if biased_attention_backend not in BIASED_ATTENTION_BACKENDS:
        raise ValueError(f"Unknown biased_attention_backend {biased_attention_backend!r}; valid choices are "
                         f"{', '.join(BIASED_ATTENTION_BACKENDS)}.")
    if biased_attention_backend != "auto":
        return biased_attention_backend
    if low_precision_on_cpu(q):
        return "explicit"
    if q.device.type != "cpu":
        return "sdpa"
    return "cpu_flash" if bias.requires_grad and torch.is_grad_enabled() else "sdpa"


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
                        attn_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Attention over heads: q (N, Tq, D), k/v (N, Tk, D), optional additive bias (H, Tq, Tk) or broadcastable to
    (N, H, Tq, Tk)."""
    n, tq, d = q.shape
    q = q.view(n, tq, num_heads, d // num_heads).transpose(1, 2)  # (N, H, Tq, d)
    k = k.view(n, k.shape[1], num_heads, d // num_heads).transpose(1, 2)  # (N, H, Tk, d)
    v = v.view(n, v.shape[1], num_heads, d // num_heads).transpose(1, 2)  # (N, H, Tk, d)
    if attn_bias is None:
        explicit = pick_attention(q) == "explicit"
        out = explicit_attention(q, k, v) if explicit else F.scaled_dot_product_attention(q, k, v)  # (N, H, Tq, d)
    else:
        attn_bias = attn_bias.expand(1, *attn_bias.shape[-3:]) if attn_bias.dim() == 3 else attn_bias
        kernel = pick_biased_attention(q, attn_bias)
        if kernel == "flex":
            out = flex_biased_attention(q, k, v, attn_bias)
        elif kernel == "explicit":
            out = explicit_attention(q, k, v, attn_bias)
        elif kernel == "cpu_flash":
            if q.device.type != "cpu":
                raise ValueError(f"biased_attention_backend='cpu_flash' runs on a CPU only, got {q.device.type} "
                                 f"tensors; valid choices there are {', '.join(BIASED_ATTENTION_BACKENDS)}.")
            out = CPUFlashBiasedAttention.apply(q, k, v, attn_bias.to(q.dtype))
        else:  # a 4D bias: SDPA sends a 3D one to its unfused math path
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
    return out.transpose(1, 2).reshape(n, tq, d)  # (N, Tq, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias) and an output projection."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by num_attention_heads={num_heads}.")
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.to_qkv(x).chunk(3, dim=-1)  # 3 x (N, T, D)
        return self.to_out(multihead_attention(q, k, v, self.num_heads))


class CrossAttention(nn.Module):
    """Multi-head cross-attention from tokens (N, T, D) to a context sequence (N, S, D)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(context).chunk(2, dim=-1)  # 2 x (N, S, D)
        return self.to_out(multihead_attention(self.to_q(x), k, v, self.num_heads))


class FeedForward(nn.Module):
    """Linear -> GELU(tanh) -> Linear, hidden width `mlp_ratio * dim`."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


#################################################################################
#                                  Final layer                                  #
#################################################################################


FINAL_LAYER_TYPES = ("adaln", "layernorm", "layernorm_silu")


class FinalLayer(nn.Module):
    """Per-token decoder: normalise, then Linear to p*p*out_channels.

    `norm_type` picks the normalisation: `"adaln"` regresses (shift, scale) from the conditioning vector (DiT's
    adaLN designs); `"layernorm"` is a plain affine LayerNorm (DiT's in-context / cross-attention designs);
    `"layernorm_silu"` is LayerNorm (no affine) -> SiLU, unconditioned (DiffiT).
    """

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm_type: str = "adaln"):
        super().__init__()
        if norm_type not in FINAL_LAYER_TYPES:
            raise ValueError(f"Unknown norm_type {norm_type!r}; valid choices are {', '.join(FINAL_LAYER_TYPES)}.")
        self.norm_type = norm_type
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=norm_type == "layernorm", eps=1e-6)
        self.adaln_linear = nn.Linear(hidden_size, 2 * hidden_size) if norm_type == "adaln" else None
        self.proj_out = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)  # (N, T, D)
        if self.norm_type == "adaln":
            shift, scale = self.adaln_linear(c)[:, None].chunk(2, dim=-1)  # c = SiLU(cond): 2 x (N, 1, D)
            x = modulate(x, shift, scale)
        elif self.norm_type == "layernorm_silu":
            x = F.silu(x)
        return self.proj_out(x)  # (N, T, p*p*C_out)


#################################################################################
#                                 Weight init                                   #
#################################################################################


def init_vit_weights(module: nn.Module) -> None:
    """DiT/ViT init: xavier-uniform Linear weights with zero bias; patch convs initialised like a Linear."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            w = m.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.zeros_(m.proj.bias)


def init_conditioning_weights(embedder: nn.Module) -> None:
    """normal(0, 0.02) for the label table and the timestep MLP weights, as in DiT."""
    if embedder.class_embedder is not None:
        nn.init.normal_(embedder.class_embedder.weight, std=0.02)
    nn.init.normal_(embedder.timestep_embedder.linear_1.weight, std=0.02)
    nn.init.normal_(embedder.timestep_embedder.linear_2.weight, std=0.02)
