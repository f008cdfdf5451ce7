"""Proxy training: the loop, evaluation, checkpoints and Observations rows.

One trainer serves a single proxy and a packed swarm: it trains K models with stacked weights
(model.py), each with its own mixture, seed and data stream, and K = 1 is a single run.

Entry points the study executors call:

    train_proxy(config, shards_dir, mixture, steps=..., size=..., seed=..., out_dir=...)
        -> ProxyResult
    train_swarm(config, shards_dir, mixtures, steps=..., size=..., seeds=..., out_dir=...)
        -> list[ProxyResult]

Every run writes ``<out_dir>/<run_id>/`` with ``result.json`` (status, reason, throughput),
``observations.csv`` (the tidy rows of DESIGN.md) and ``checkpoint.pt`` (resumable). A
failure (NaN loss, out of memory, missing data) ends the run with a recorded reason and
touches no other run's folder; a killed run resumes from its last checkpoint.

GPU path: bf16 autocast, torch.compile of the transformer body, the fused chunked loss, fused
AdamW, and the whole training step (data gather, forward, backward, per-model clipping,
optimiser) captured in one CUDA graph; per-step losses stay on the device until the next
evaluation, so the hot loop never waits for the host. On CPU the same code runs in fp32.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bayesmix.errors import BayesMixError
from bayesmix.proxy.data import Manifest, ProxyDataError, load_manifest
from bayesmix.proxy.model import GPT, ModelConfig
from bayesmix.proxy.sampler import MixtureSampler, normalise_mixture

log = logging.getLogger(__name__)

SIZES = ("tiny", "6m", "15m", "30m", "60m")
MAX_RESIDENT_TOKENS = 2_000_000_000  # int32 on the device: 8 GB


class ProxyRunError(BayesMixError, RuntimeError):
    """A proxy run failed; the message is the recorded reason."""


# ---------------------------------------------------------------- configuration
def configs_dir() -> Path:
    """configs/proxy of the repository (or $BAYESMIX_CONFIGS/proxy)."""
    env = os.environ.get("BAYESMIX_CONFIGS")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "configs"
    return root / "proxy"


def load_size(size: str | Path) -> dict[str, Any]:
    """The model and training settings of a size name (tiny, 6m, ...) or a YAML path."""
    import yaml

    path = Path(size)
    if not path.suffix:
        path = configs_dir() / f"{size}.yaml"
    if not path.is_file():
        raise ProxyDataError(
            f"unknown proxy size {str(size)!r}: no {path} (sizes: {', '.join(SIZES)})"
        )
    data = yaml.safe_load(path.read_text()) or {}
    return {**data.get("model", {}), **data.get("train", {})}


@dataclass
class ProxyRunConfig:
    """Everything about a proxy run except its mixture, steps, seed and data.

    Fields left at None take the size's YAML values (configs/proxy/<size>.yaml).
    """

    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    ctx: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup: int | None = None
    eval_tokens: int | None = None  # held-out tokens evaluated per domain at each eval step
    schedule: str = (
        "constant"  # after warm-up; "constant" keeps the law's step axis run-length free
    )
    min_lr_frac: float = 0.1  # cosine floor
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_points: int = 8  # log-spaced evaluation steps, the last one = steps
    eval_first: float = 1 / 30  # first evaluation at this fraction of the run
    max_epochs: float = 4.0
    on_repeat: str = "warn"  # "error" | "warn" | "ignore"
    device: str = "auto"
    compile: str | bool = "auto"  # auto: on CUDA
    cuda_graph: str | bool = "auto"  # auto: on CUDA
    compile_mode: str | None = None  # e.g. "max-autotune-no-cudagraphs"
    bf16_residual: bool = True  # on CUDA: keep the residual stream in bf16 (half the traffic)
    loss_chunk: int = 8192  # rows of logits per chunk of the fused loss
    checkpoint: bool = True
    threads: int | None = None  # CPU threads for torch (None: torch's default)

    def resolved(self, size: str | Path) -> ProxyRunConfig:
        base = load_size(size)
        out = dataclasses.replace(self)
        for f in (
            "d_model",
            "n_layers",
            "n_heads",
            "ctx",
            "batch_size",
            "lr",
            "warmup",
            "eval_tokens",
        ):
            if getattr(out, f) is None:
                if f not in base:
                    raise ProxyDataError(f"size {size!r} does not set {f!r}")
                setattr(out, f, type_of(f)(base[f]))
        if out.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {out.schedule!r}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def type_of(f: str) -> type:
    return float if f == "lr" else int


@dataclass
class ProxyResult:
    run_id: str
    status: str  # "completed" | "failed"
    observations: pd.DataFrame
    reason: str | None = None
    steps_done: int = 0
    mixture: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    model_size: int = 0
    tokens_per_s: float | None = None
    out_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def raise_for_status(self) -> ProxyResult:
        if not self.ok:
            raise ProxyRunError(f"proxy run {self.run_id}: {self.reason}")
        return self


# ---------------------------------------------------------------- helpers
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ProxyDataError("device 'cuda' asked for, but torch sees no GPU")
    return dev


def eval_steps(steps: int, points: int, first_frac: float) -> list[int]:
    """Log-spaced evaluation steps ending at ``steps`` (distinct, increasing)."""
    first = max(1, round(steps * first_frac))
    grid = np.unique(np.round(np.geomspace(first, steps, max(points, 1))).astype(int))
    return [int(s) for s in grid if 1 <= s <= steps]


def lr_at(cfg: ProxyRunConfig, step: int, steps: int) -> float:
    warm = max(cfg.warmup or 0, 0)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    frac = (step - warm) / max(steps - warm, 1)
    floor = cfg.lr * cfg.min_lr_frac
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(frac, 1.0)))


def default_run_id(mixture: Mapping[str, float], steps: int, size: str, seed: int) -> str:
    key = json.dumps(
        {
            "m": {k: round(v, 6) for k, v in sorted(mixture.items())},
            "s": steps,
            "z": str(size),
            "seed": seed,
        },
        sort_keys=True,
    )
    return f"proxy-{size}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Trains K proxies (stacked) on their mixtures; K = 1 is a single run."""

    def __init__(
        self,
        cfg: ProxyRunConfig,
        manifest: Manifest,
        mixtures: Sequence[Mapping[str, float]],
        seeds: Sequence[int],
        steps: int,
    ) -> None:
        if len(mixtures) != len(seeds):
            raise ValueError("one seed per mixture")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.cfg, self.manifest, self.steps = cfg, manifest, steps
        self.k = len(mixtures)
        self.domains = manifest.domains
        self.mixtures = [normalise_mixture(m, self.domains) for m in mixtures]
        self.seeds = [int(s) for s in seeds]
        self.device = pick_device(cfg.device)
        cuda = self.device.type == "cuda"
        self.mcfg = ModelConfig(
            vocab_size=manifest.vocab_size,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            ctx=cfg.ctx,
        )
        self.samplers = [
            MixtureSampler(manifest, m, cfg.batch_size, cfg.ctx, s, cfg.max_epochs, cfg.on_repeat)
            for m, s in zip(self.mixtures, self.seeds, strict=True)
        ]
        self.usage = [s.check_repetition(steps) for s in self.samplers]

        # All training tokens live on the device (proxies train on small corpora), so a batch
        # is one gather kernel from start offsets: no host-side copy of token data per step.
        total = sum(manifest.n_tokens(d, "train") for d in self.domains)
        if total > MAX_RESIDENT_TOKENS:
            raise ProxyDataError(
                f"the shards hold {total:,} training tokens; proxy training keeps them in "
                f"device memory and allows at most {MAX_RESIDENT_TOKENS:,} (prepare a sample)"
            )
        self.tokens = torch.from_numpy(
            np.concatenate(
                [np.asarray(manifest.tokens(d, "train"), dtype=np.int32) for d in self.domains]
            )
        ).to(self.device)
        self.window = torch.arange(cfg.ctx + 1, device=self.device)

        self.model = GPT(self.mcfg, self.seeds).to(self.device)
        self.use_compile = cuda if cfg.compile == "auto" else bool(cfg.compile)
        self.use_graph = cuda if cfg.cuda_graph == "auto" else bool(cfg.cuda_graph)
        if self.use_graph and not cuda:
            raise ValueError("cuda_graph needs a CUDA device")
        if cuda and cfg.bf16_residual:
            self.model.resid_dtype = torch.bfloat16
        # Per-model clipping touches every gradient: compiled, it is a few fused kernels
        # instead of four small ones per parameter.
        self._clip = torch.compile(clip_per_model) if self.use_compile else clip_per_model
        if self.use_compile:
            self.model.enable_compile(**({"mode": cfg.compile_mode} if cfg.compile_mode else {}))
        # Weight decay on the matrices (K, in, out) and the embedding, not on the norm gains.
        decay = [p for p in self.model.parameters() if p.dim() == 3]
        no_decay = [p for p in self.model.parameters() if all(p is not q for q in decay)]
        lr0: float | torch.Tensor = lr_at(cfg, 0, steps)
        if self.use_graph:  # a tensor lr can change between graph replays
            lr0 = torch.tensor(lr0, device=self.device)
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=lr0,
            betas=cfg.betas,
            fused=cuda or None,
            capturable=self.use_graph,
        )
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda)
        self.step = 0
        self.loss_hist = torch.zeros(steps, self.k, device=self.device)
        self.rows: list[dict[str, Any]] = []
        self.failed: dict[int, str] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self._starts_block: tuple[int, torch.Tensor] | None = None
        self._eval_sets = self._make_eval_sets()
        self.train_seconds = 0.0
        self.train_tokens = 0

    # ---------------------------------------------------------------- one step
    def _train_step(self, starts: torch.Tensor) -> torch.Tensor:
        """Forward, backward, per-model clipping and the optimiser for starts (K, B)."""
        win = self.tokens[starts.unsqueeze(-1) + self.window].long()  # (K, B, T+1)
        with self.autocast:
            loss = self.model(win[..., :-1], win[..., 1:], chunk=self.cfg.loss_chunk)
        loss.sum().backward()  # models are independent: d(sum)/d(model k) = d(loss_k)
        if self.cfg.grad_clip > 0:
            self._clip([p.grad for p in self.model.parameters()], self.cfg.grad_clip)
        self.opt.step()
        return loss.detach()

    def _starts(self, step: int) -> torch.Tensor:
        # Start offsets are computed on the host a block of steps ahead and uploaded at once.
        block = 64
        if self._starts_block is None or not (
            self._starts_block[0] <= step < self._starts_block[0] + block
        ):
            first = step
            n = min(block, self.steps - first)
            arr = np.stack([s.starts_block(first, n) for s in self.samplers], axis=1)  # (n, K, B)
            host = torch.from_numpy(arr)
            if self.device.type == "cuda":  # pinned + async: no wait for the queued steps
                host = host.pin_memory()
            self._starts_block = (first, host.to(self.device, non_blocking=True))
        first, dev = self._starts_block
        return dev[step - first]

    def _set_lr(self, step: int) -> None:
        lr = lr_at(self.cfg, step, self.steps)
        for g in self.opt.param_groups:
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def _capture(self) -> None:
        """Capture the whole training step in one CUDA graph (after a warm-up on a side stream)."""
        self.static_starts = self._starts(self.step).clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # Warm-up steps must not change the models: run them on a throwaway copy of the state.
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        opt_state = copy.deepcopy(self.opt.state_dict())
        with torch.cuda.stream(side):
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                self._train_step(self.static_starts)
        torch.cuda.current_stream().wait_stream(side)
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self._train_step(self.static_starts)
        # Restore the pre-warm-up state in place (the graph holds these very tensors).
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])
            _load_opt_state_inplace(self.opt, opt_state)

    def train_until(self, stop: int) -> None:
        t0 = time.perf_counter()
        start = self.step
        if self.use_graph and self.graph is None:
            self._capture()
            t0 = time.perf_counter()
        while self.step < stop:
            self._set_lr(self.step)
            starts = self._starts(self.step)
            if self.graph is not None:
                self.static_starts.copy_(starts, non_blocking=True)
                self.graph.replay()
                self.loss_hist[self.step].copy_(self.static_loss, non_blocking=True)
            else:
                self.opt.zero_grad(set_to_none=True)
                self.loss_hist[self.step] = self._train_step(starts)
            self.step += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.train_seconds += time.perf_counter() - t0
        self.train_tokens += (self.step - start) * self.k * self.cfg.batch_size * self.cfg.ctx

    # ---------------------------------------------------------------- evaluation
    def _make_eval_sets(self) -> dict[str, torch.Tensor]:
        b, t = self.cfg.batch_size, self.cfg.ctx
        n_batches = max(1, round(self.cfg.eval_tokens / (b * t)))
        out, offset = {}, 0
        val = []
        for d in self.domains:
            arr = np.asarray(self.manifest.tokens(d, "val"), dtype=np.int32)
            if len(arr) < t + 1:
                raise ProxyDataError(
                    f"domain {d!r}: held-out split has {len(arr)} tokens, fewer than ctx + 1 = "
                    f"{t + 1}; use a smaller ctx or more data"
                )
            # Evenly spread windows (overlapping only when the split is short).
            starts = np.round(np.linspace(0, len(arr) - t - 1, n_batches * b)).astype(np.int64)
            out[d] = torch.from_numpy(starts + offset).view(n_batches, b)
            val.append(arr)
            offset += len(arr)
        self.val_tokens = torch.from_numpy(np.concatenate(val)).to(self.device)
        return {d: s.to(self.device) for d, s in out.items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, torch.Tensor]:
        """Mean held-out loss (nats/token) per domain: {domain: tensor (K,)}."""
        out = {}
        for d, batches in self._eval_sets.items():
            acc = torch.zeros(self.k, device=self.device)
            for starts in batches:
                win = self.val_tokens[starts.unsqueeze(-1) + self.window].long()
                win = win.unsqueeze(0).expand(self.k, -1, -1)
                with self.autocast:
                    acc += self.model(win[..., :-1], win[..., 1:], chunk=self.cfg.loss_chunk)
            out[d] = acc / len(batches)
        return out

    def record(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        losses = {d: v.float().cpu().numpy() for d, v in self.evaluate().items()}
        new = []
        tokens = self.step * self.cfg.batch_size * self.cfg.ctx
        n_params = self.mcfg.n_params()
        for k, run_id in enumerate(run_ids):
            if k in self.failed:
                continue
            for d in self.domains:
                loss = float(losses[d][k])
                bpb = loss / (self.manifest.bytes_per_token(d, "val") * math.log(2))
                for metric, value in (("loss", loss), ("bpb", bpb)):
                    row = {
                        "run_id": run_id,
                        "step": self.step,
                        "tokens": tokens,
                        "target": d,
                        "value": value,
                        "metric": metric,
                        "model_size": n_params,
                        "seed": self.seeds[k],
                    }
                    row.update({f"r:{dd}": self.mixtures[k][dd] for dd in self.domains})
                    new.append(row)
        self.rows.extend(new)
        return new

    def check_finite(self, upto: int) -> None:
        """Mark models whose training loss went non-finite (one host read per evaluation)."""
        bad = (~torch.isfinite(self.loss_hist[:upto])).any(0).cpu().numpy()
        for k in np.flatnonzero(bad):
            if int(k) not in self.failed:
                first = int(np.argmax(~np.isfinite(self.loss_hist[:upto, k].cpu().numpy())))
                self.failed[int(k)] = f"non-finite training loss at step {first}"

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "loss_hist": self.loss_hist.cpu(),
            "rows": self.rows,
            "failed": self.failed,
            "train_seconds": self.train_seconds,
            "train_tokens": self.train_tokens,
        }

    def load_state(self, st: Mapping[str, Any]) -> None:
        self.model.load_state_dict(st["model"])
        _load_opt_state_inplace(self.opt, st["opt"])
        self.step = int(st["step"])
        self.loss_hist.copy_(st["loss_hist"].to(self.device))
        self.rows = list(st["rows"])
        self.failed = {int(k): v for k, v in st["failed"].items()}
        self.train_seconds = float(st.get("train_seconds", 0.0))
        self.train_tokens = int(st.get("train_tokens", 0))


def clip_per_model(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale each model's gradients (dim 0 indexes the model) to global norm <= max_norm."""
    sq = sum(g.float().pow(2).flatten(1).sum(1) for g in grads)  # (K,): one norm per model
    coef = (max_norm / (torch.sqrt(sq) + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))


def _load_opt_state_inplace(opt: torch.optim.Optimizer, sd: Mapping[str, Any]) -> None:
    """Load optimiser state into the existing tensors (a captured CUDA graph reads them)."""
    if not opt.state:
        opt.load_state_dict(sd)
        return
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        saved = sd["state"].get(i)
        cur = opt.state.get(p)
        if saved is None or cur is None:
            if saved is not None:
                opt.state[p] = {
                    k: (v.to(p.device) if torch.is_tensor(v) else v) for k, v in saved.items()
                }
            elif cur is not None:
                for v in cur.values():
                    if torch.is_tensor(v):
                        v.zero_()
            continue
        for key, v in saved.items():
            if torch.is_tensor(cur.get(key)):
                cur[key].copy_(v)
            else:
                cur[key] = v


# ---------------------------------------------------------------- public entry points
def train_proxy(
    config: ProxyRunConfig | None,
    shards_dir: str | Path,
    mixture: Mapping[str, float],
    steps: int = 300,
    size: str | Path = "tiny",
    seed: int = 0,
    out_dir: str | Path = "runs/proxy",
    run_id: str | None = None,
    strict: bool = False,
    progress: bool = False,
) -> ProxyResult:
    """Train one proxy on ``mixture`` and return its per-domain held-out losses.

    Args:
        config: run settings (None: the size's defaults).
        shards_dir: a folder written by ``prepare``.
        mixture: domain -> share, summing to 1 (domains left out get 0).
        steps: optimiser steps.
        size: tiny, 6m, 15m, 30m, 60m or a YAML file.
        seed: model initialisation and data order.
        out_dir: runs are written to ``<out_dir>/<run_id>/``.
        run_id: default: derived from mixture, steps, size and seed.
        strict: raise ProxyRunError instead of returning a failed result.
        progress: a progress bar over the steps.

    Returns:
        ProxyResult with the Observations rows (metric "loss" in nats/token and "bpb").
    """
    rid = run_id or default_run_id(mixture, steps, str(size), seed)
    return train_swarm(
        config,
        shards_dir,
        [mixture],
        steps,
        size,
        [seed],
        out_dir,
        [rid],
        strict=strict,
        progress=progress,
    )[0]


def train_swarm(
    config: ProxyRunConfig | None,
    shards_dir: str | Path,
    mixtures: Sequence[Mapping[str, float]],
    steps: int = 300,
    size: str | Path = "tiny",
    seeds: Sequence[int] | None = None,
    out_dir: str | Path = "runs/proxy",
    run_ids: Sequence[str] | None = None,
    strict: bool = False,
    progress: bool = False,
) -> list[ProxyResult]:
    """Train K proxies at once, packed into one model with stacked weights.

    Each proxy has its own mixture, seed, data stream and optimiser state; the results equal
    those of training them one by one (up to floating-point rounding). Arguments as for
    :func:`train_proxy`, one mixture / seed / run id per proxy.
    """
    k = len(mixtures)
    if k == 0:
        raise ValueError("train_swarm: no mixtures")
    seeds = list(seeds) if seeds is not None else list(range(k))
    rids = (
        list(run_ids)
        if run_ids is not None
        else [default_run_id(m, steps, str(size), s) for m, s in zip(mixtures, seeds, strict=True)]
    )
    if len(seeds) != k or len(rids) != k or len(set(rids)) != k:
        raise ValueError("train_swarm: give one seed and one distinct run id per mixture")
    out = Path(out_dir)
    base = config or ProxyRunConfig()
    threads = torch.get_num_threads()
    if base.threads:  # for this call only: torch's thread count is process-wide
        torch.set_num_threads(base.threads)
    try:
        return _train_swarm(
            base, shards_dir, mixtures, steps, size, seeds, rids, out, strict, progress
        )
    finally:
        torch.set_num_threads(threads)


def _train_swarm(
    base: ProxyRunConfig,
    shards_dir: str | Path,
    mixtures: Sequence[Mapping[str, float]],
    steps: int,
    size: str | Path,
    seeds: list[int],
    rids: list[str],
    out: Path,
    strict: bool,
    progress: bool,
) -> list[ProxyResult]:
    k = len(mixtures)
    run_dirs = [out / r for r in rids]
    ckpt_dir = (
        run_dirs[0]
        if k == 1
        else out / ("swarm-" + hashlib.sha1("|".join(rids).encode()).hexdigest()[:10])
    )
    trainer: Trainer | None = None
    try:
        cfg = base.resolved(size)
        manifest = load_manifest(shards_dir)
        trainer = Trainer(cfg, manifest, mixtures, seeds, steps)
        for d in [*run_dirs, ckpt_dir]:
            d.mkdir(parents=True, exist_ok=True)
        signature = _signature(cfg, manifest, trainer.mixtures, seeds, steps, rids)
        _maybe_resume(trainer, ckpt_dir / "checkpoint.pt", signature)
        schedule = [
            s for s in eval_steps(steps, cfg.eval_points, cfg.eval_first) if s > trainer.step
        ]
        _run(trainer, schedule, rids, ckpt_dir, signature, cfg, progress)
    except Exception as exc:  # every failure becomes a recorded reason (strict re-raises)
        reason = _reason(exc)
        log.error("proxy run(s) %s failed: %s", ", ".join(rids), reason)
        log.debug("%s", traceback.format_exc())
        results = []
        for i, (rid, rdir) in enumerate(zip(rids, run_dirs, strict=True)):
            rows = [r for r in (trainer.rows if trainer else []) if r["run_id"] == rid]
            res = ProxyResult(
                rid,
                "failed",
                pd.DataFrame(rows),
                reason,
                trainer.step if trainer else 0,
                trainer.mixtures[i] if trainer else dict(mixtures[i]),
                seeds[i],
                trainer.mcfg.n_params() if trainer else 0,
                None,
                rdir,
            )
            _write_result(res, rdir, size, base)
            results.append(res)
        if strict:
            raise ProxyRunError(f"proxy run(s) {', '.join(rids)}: {reason}") from exc
        return results

    results = []
    tps = trainer.train_tokens / trainer.train_seconds if trainer.train_seconds else None
    for i, (rid, rdir) in enumerate(zip(rids, run_dirs, strict=True)):
        rows = pd.DataFrame([r for r in trainer.rows if r["run_id"] == rid])
        failed = trainer.failed.get(i)
        res = ProxyResult(
            rid,
            "failed" if failed else "completed",
            rows,
            failed,
            trainer.step,
            trainer.mixtures[i],
            seeds[i],
            trainer.mcfg.n_params(),
            tps / k if tps else None,
            rdir,
        )
        _write_result(res, rdir, size, cfg)
        results.append(res)
    if strict:
        for r in results:
            r.raise_for_status()
    return results


def _run(
    trainer: Trainer,
    schedule: list[int],
    rids: list[str],
    ckpt_dir: Path,
    signature: str,
    cfg: ProxyRunConfig,
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=trainer.steps, initial=trainer.step, desc="proxy", unit="step", disable=not progress
    )
    for stop in schedule:
        before = trainer.step
        trainer.train_until(stop)
        bar.update(trainer.step - before)
        trainer.check_finite(trainer.step)
        if len(trainer.failed) == trainer.k:
            raise ProxyRunError("; ".join(sorted(set(trainer.failed.values()))))
        trainer.record(rids)
        if cfg.checkpoint:
            _save_checkpoint(trainer, ckpt_dir / "checkpoint.pt", signature)
    bar.close()


def _signature(
    cfg: ProxyRunConfig,
    manifest: Manifest,
    mixtures: list[dict[str, float]],
    seeds: Sequence[int],
    steps: int,
    rids: Sequence[str],
) -> str:
    keep = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in ("device", "compile", "cuda_graph", "compile_mode", "threads")
    }
    blob = json.dumps(
        {
            "cfg": keep,
            "tok": manifest.tokenizer,
            "mix": mixtures,
            "shards": {d: manifest.data["domains"][d]["train"]["sha256"] for d in manifest.domains},
            "seeds": list(seeds),
            "steps": steps,
            "runs": list(rids),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _save_checkpoint(trainer: Trainer, path: Path, signature: str) -> None:
    st = trainer.state()
    st["signature"] = signature
    tmp = path.with_name(path.name + ".tmp")
    torch.save(st, tmp)
    os.replace(tmp, path)  # a kill mid-write leaves the previous checkpoint intact


def _maybe_resume(trainer: Trainer, path: Path, signature: str) -> None:
    if not path.is_file():
        return
    try:
        st = torch.load(path, map_location=trainer.device, weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ProxyDataError(
            f"{path}: unreadable checkpoint ({exc}); delete it to restart"
        ) from exc
    if st.get("signature") != signature:
        raise ProxyDataError(
            f"{path}: checkpoint of a different run (other settings, data or mixture); "
            "use another run id or out_dir, or delete it"
        )
    trainer.load_state(st)
    log.info("resumed from %s at step %d", path, trainer.step)


def _write_result(res: ProxyResult, rdir: Path, size: str | Path, cfg: ProxyRunConfig) -> None:
    rdir.mkdir(parents=True, exist_ok=True)
    if len(res.observations):
        res.observations.to_csv(rdir / "observations.csv", index=False)
    meta = {
        "run_id": res.run_id,
        "status": res.status,
        "reason": res.reason,
        "steps_done": res.steps_done,
        "mixture": res.mixture,
        "seed": res.seed,
        "size": str(size),
        "model_size": res.model_size,
        "tokens_per_s": res.tokens_per_s,
        "config": cfg.to_dict(),
        "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write(rdir / "result.json", json.dumps(meta, indent=1, default=str))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"out of memory: {str(exc).splitlines()[0]}"
    if isinstance(exc, ProxyDataError | ProxyRunError | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
