"""The proxy model: a small decoder-only transformer, nanoGPT-like, in one file.

Pre-norm (RMSNorm, gains folded into the next matmul), rotary positions, causal SDPA
attention, GELU MLP, tied input/output embeddings. Every weight carries a leading *model*
dimension K: ``GPT(cfg, seeds=[s])`` is one model, ``GPT(cfg, seeds=[s1, ..., sK])`` is K
independent models ("a swarm") whose matrix products run as batched matmuls. Model k of a
swarm is initialised exactly like a single model with seed s_k and never sees the other
models' data or gradients, so training K packed models gives the losses of the K trained
alone (up to floating-point rounding).

The loss is a fused, chunked linear + cross-entropy (``linear_cross_entropy``): the
(tokens x vocabulary) logits are never materialised whole, and the gradient of each chunk
is formed in the forward pass, so the float32 logits and their softmax never travel through
GPU memory more than once. This is where a naive loop spends much of a small model's step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ctx: int = 256
    mlp_ratio: int = 4
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary positions")

    @property
    def padded_vocab(self) -> int:
        # A multiple of 64 keeps the output matmul on fast tensor-core tiles.
        return -(-self.vocab_size // 64) * 64

    def n_params(self) -> int:
        """Parameters of one model (the tied embedding counted once)."""
        d, L = self.d_model, self.n_layers
        per_layer = 2 * d + d * 3 * d + d * d + 2 * d * self.mlp_ratio * d
        return self.padded_vocab * d + L * per_layer + d

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6 N plus attention, counted as the reference benchmark does."""
        return 6 * self.n_params() + 6 * self.n_layers * self.d_model * self.ctx


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMS normalisation without a gain, computed in float32, returned in x's dtype.

    The learned gains are folded into the next matmul's weight (W' = diag(g) W) instead:
    the same model, one elementwise pass over the activations fewer, and it sidesteps a
    torch.compile bug that returns wrongly shaped gradients for a broadcast gain with size-1
    dimensions (pytorch/pytorch#178080, seen with K = 1).
    """
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+h/2}) by position-dependent angles. x: (..., T, hd)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def block_core(
    x: torch.Tensor,
    wqkv: torch.Tensor,
    wproj: torch.Tensor,
    wfc: torch.Tensor,
    wfc2: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_heads: int,
    batch: int,
) -> torch.Tensor:
    """One pre-norm transformer block for K stacked models. x: (K, B*T, d); W: (K, in, out)."""
    k, n, d = x.shape
    t, hd = n // batch, d // n_heads
    qkv = torch.bmm(rms_norm(x), wqkv)
    qkv = qkv.view(k * batch, t, 3, n_heads, hd).permute(2, 0, 3, 1, 4)
    q, kk, v = rotary(qkv[0], cos, sin), rotary(qkv[1], cos, sin), qkv[2]
    y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
    y = y.transpose(1, 2).reshape(k, n, d)
    x = x + torch.bmm(y, wproj).to(x.dtype)
    h = F.gelu(torch.bmm(rms_norm(x), wfc), approximate="tanh")
    return x + torch.bmm(h, wfc2).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, k: int) -> None:
        super().__init__()
        d, h = cfg.d_model, cfg.mlp_ratio * cfg.d_model
        self.n_heads = cfg.n_heads
        self.g1 = nn.Parameter(torch.ones(k, d))  # RMSNorm gains, folded into qkv / fc
        self.g2 = nn.Parameter(torch.ones(k, d))
        # Weights stored (K, in, out) so that x @ W is one batched matmul over the K models.
        self.qkv = nn.Parameter(torch.empty(k, d, 3 * d))
        self.proj = nn.Parameter(torch.empty(k, d, d))
        self.fc = nn.Parameter(torch.empty(k, d, h))
        self.fc2 = nn.Parameter(torch.empty(k, h, d))
        self.core: Callable[..., torch.Tensor] = block_core

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, batch: int
    ) -> torch.Tensor:
        wqkv = self.g1.unsqueeze(-1) * self.qkv
        wfc = self.g2.unsqueeze(-1) * self.fc
        return self.core(x, wqkv, self.proj, wfc, self.fc2, cos, sin, self.n_heads, batch)


class GPT(nn.Module):
    """K decoder-only transformers with stacked weights; K = len(seeds)."""

    def __init__(self, cfg: ModelConfig, seeds: Sequence[int] = (0,)) -> None:
        super().__init__()
        k = len(seeds)
        if k < 1:
            raise ValueError("GPT needs at least one seed (one model)")
        self.cfg, self.k = cfg, k
        self.wte = nn.Parameter(torch.empty(k, cfg.padded_vocab, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg, k) for _ in range(cfg.n_layers))
        self.g_f = nn.Parameter(torch.ones(k, cfg.d_model))  # final-norm gain, folded into the head
        # The residual stream's dtype: float32, or bfloat16 on the GPU to halve its traffic.
        self.resid_dtype = torch.float32
        hd = cfg.d_model // cfg.n_heads
        inv = 1.0 / cfg.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.outer(torch.arange(cfg.ctx, dtype=torch.float64), inv)
        self.register_buffer("cos", ang.cos().float(), persistent=False)
        self.register_buffer("sin", ang.sin().float(), persistent=False)
        # Padded vocabulary entries get -inf logits, so they take no probability mass.
        bias = torch.zeros(cfg.padded_vocab)
        bias[cfg.vocab_size :] = float("-inf")
        self.register_buffer("vocab_bias", bias, persistent=False)
        self.ce_chunk: Callable = ce_chunk
        self._init(seeds)

    @torch.no_grad()
    def _init(self, seeds: Sequence[int]) -> None:
        # Each model draws its weights from its own generator, in a fixed order: model k of a
        # swarm starts exactly where a single model with seed s_k starts.
        std, out_std = 0.02, 0.02 / math.sqrt(2 * self.cfg.n_layers)
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            self.wte[i].copy_(torch.randn(self.wte.shape[1:], generator=g) * std)
            for b in self.blocks:
                for name, s in (("qkv", std), ("proj", out_std), ("fc", std), ("fc2", out_std)):
                    p = getattr(b, name)
                    p[i].copy_(torch.randn(p.shape[1:], generator=g) * s)

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (K, B*T, d), before the gain, for token ids idx (K, B, T)."""
        k, b, t = idx.shape
        if k != self.k:
            raise ValueError(f"expected token ids for {self.k} model(s), got {k}")
        if t > self.cfg.ctx:
            raise ValueError(f"sequence length {t} exceeds the model context {self.cfg.ctx}")
        offs = (torch.arange(k, device=idx.device) * self.cfg.padded_vocab).view(k, 1, 1)
        x = F.embedding((idx + offs).view(k, b * t), self.wte.view(-1, self.cfg.d_model))
        x = x.to(self.resid_dtype)
        cos, sin = self.cos[:t], self.sin[:t]
        for block in self.blocks:
            x = block(x, cos, sin, b)
        return rms_norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Mean next-token loss (nats) per model: shape (K,). idx, targets: (K, B, T)."""
        h = self.hidden(idx)
        dtype = (
            torch.get_autocast_dtype(h.device.type)
            if torch.is_autocast_enabled(h.device.type)
            else torch.float32
        )
        head = self.wte * self.g_f.unsqueeze(1)  # tied output embedding with the norm's gain
        return linear_cross_entropy(
            h.to(dtype),
            head,
            targets.reshape(self.k, -1),
            self.vocab_bias,
            chunk,
            self.ce_chunk,
        )

    def enable_compile(self, **kwargs: Any) -> None:
        """torch.compile each transformer block and the loss-chunk kernel (GPU path).

        Blocks are compiled one by one ("regional" compilation): the blocks share shapes, so
        they share one compiled graph and compiling costs one block, not the whole model.
        The chunked loss loop stays eager: a few large matmuls and one fused kernel per chunk,
        and the CUDA graph of train.py removes its launch cost.
        """
        core = torch.compile(block_core, dynamic=False, **kwargs)
        for block in self.blocks:
            block.core = core
        self.ce_chunk = torch.compile(ce_chunk, dynamic=False)


def ce_chunk(
    logits: torch.Tensor, targets: torch.Tensor, bias: torch.Tensor, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross-entropy per model and d(loss_sum)/d(logits) for one chunk of rows.

    logits (K, c, V) in the compute dtype, targets (K, c). Under torch.compile this is one
    fused pass: read the logits once, write the gradient once (in the compute dtype).
    """
    x = logits.float() + bias
    lse = torch.logsumexp(x, dim=-1, keepdim=True)
    loss = (lse.squeeze(-1) - x.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).sum(-1)
    if not need_grad:
        return loss, None
    g = torch.exp(x - lse)
    # An equality mask, not F.one_hot: one_hot checks its input on the host (a GPU sync).
    hit = torch.arange(x.shape[-1], device=x.device) == targets.unsqueeze(-1)
    g = g - hit.to(g.dtype)
    return loss, g.to(logits.dtype)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, targets, bias, chunk, ce, need_grad):  # noqa: ANN001
        k, n, _ = h.shape
        wc = w.to(h.dtype)
        loss = torch.zeros(k, device=h.device, dtype=torch.float32)
        gh = torch.empty_like(h) if need_grad else None
        gw = torch.zeros_like(w) if need_grad else None
        for s in range(0, n, chunk):
            hc = h[:, s : s + chunk]
            logits = torch.bmm(hc, wc.transpose(1, 2))
            part, g = ce(logits, targets[:, s : s + chunk], bias, need_grad)
            loss = loss + part
            if need_grad:
                gh[:, s : s + chunk] = torch.bmm(g, wc)
                gw += torch.bmm(g.transpose(1, 2), hc).float()
        ctx.n = n
        ctx.save_for_backward(gh, gw)
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: ANN001 - autograd signature
        gh, gw = ctx.saved_tensors
        scale = (grad_loss / ctx.n).view(-1, 1, 1)
        return (gh * scale.to(gh.dtype), gw * scale, None, None, None, None, None)


def linear_cross_entropy(
    h: torch.Tensor,
    w: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor,
    chunk: int = 8192,
    ce: Callable = ce_chunk,
) -> torch.Tensor:
    """Mean cross-entropy per model of logits h @ w^T against targets, chunked over rows.

    h (K, N, d) in the compute dtype, w (K, V, d) the (float32) tied embedding, targets (K, N).
    """
    # Forming the gradient in the forward pass only pays when a backward pass will follow.
    need_grad = torch.is_grad_enabled() and (h.requires_grad or w.requires_grad)
    with torch.autocast(h.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h, w, targets, bias, chunk, ce, need_grad)
