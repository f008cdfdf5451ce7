"""Proxy model and training: fused loss, determinism, packing, the mixture effect, failures,
checkpoints and the Observations contract. All on CPU, with small models."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from bayesmix.proxy.corpus import build_sample_corpus, sample_domains
from bayesmix.proxy.data import prepare
from bayesmix.proxy.model import GPT, ModelConfig
from bayesmix.proxy.train import (
    ProxyRunConfig,
    ProxyRunError,
    Trainer,
    eval_steps,
    load_size,
    train_proxy,
    train_swarm,
)

# A small model so that the whole file runs in well under two minutes on two cores.
SMALL = dict(
    d_model=64,
    n_layers=2,
    n_heads=4,
    ctx=64,
    batch_size=8,
    lr=3e-3,
    warmup=10,
    eval_tokens=1024,
    eval_points=4,
    threads=1,
)
EVEN = {
    "python_code": 0.2,
    "c_headers": 0.2,
    "licences": 0.2,
    "python_docs": 0.2,
    "package_docs": 0.2,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("proxy")
    build_sample_corpus(root / "corpus", max_bytes_per_domain=150_000, progress=False)
    return prepare(sample_domains(root / "corpus"), root / "shards", progress=False).root


def small(**kw) -> ProxyRunConfig:
    return ProxyRunConfig(**{**SMALL, **kw})


def loss_table(res) -> pd.DataFrame:
    df = res.observations
    return df[df.metric == "loss"].pivot(index="step", columns="target", values="value")


# ---------------------------------------------------------------- model
def test_fused_chunked_loss_matches_full_logits():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=257, d_model=32, n_layers=2, n_heads=2, ctx=16)
    m = GPT(cfg, seeds=[1, 2])
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:  # norm gains: move them off 1 so that the folding is tested
                p.add_(0.1 * torch.randn_like(p))
    idx, tgt = torch.randint(0, 257, (2, 3, 16)), torch.randint(0, 257, (2, 3, 16))
    fused = m(idx, tgt, chunk=7)  # chunks that do not divide the rows
    h = m.hidden(idx)
    logits = torch.bmm(h, (m.wte * m.g_f.unsqueeze(1)).transpose(1, 2)) + m.vocab_bias
    ref = torch.stack([F.cross_entropy(logits[k], tgt[k].reshape(-1)) for k in range(2)])
    assert torch.allclose(fused, ref, atol=1e-5)
    g1 = torch.autograd.grad(fused.sum(), list(m.parameters()))
    g2 = torch.autograd.grad(ref.sum(), list(m.parameters()))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_stacked_model_k_equals_single_model_with_its_seed():
    cfg = ModelConfig(vocab_size=257, d_model=32, n_layers=2, n_heads=2, ctx=16)
    swarm, single = GPT(cfg, seeds=[5, 6, 7]), GPT(cfg, seeds=[6])
    idx = torch.randint(0, 257, (3, 2, 16))
    assert torch.allclose(swarm(idx, idx)[1], single(idx[1:2], idx[1:2])[0], atol=1e-6)


def test_sizes_are_defined():
    params = {}
    for size in ("tiny", "6m", "15m", "30m", "60m"):
        s = load_size(size)
        vocab = 257 if size == "tiny" else 8192
        params[size] = ModelConfig(
            vocab, s["d_model"], s["n_layers"], s["n_heads"], s["ctx"]
        ).n_params()
    assert 0.7e6 < params["tiny"] < 1.2e6
    for size, want in (("6m", 6.8e6), ("15m", 15e6), ("30m", 29.4e6), ("60m", 60e6)):
        assert abs(params[size] / want - 1) < 0.1, (size, params[size])


def test_eval_steps_are_log_spaced():
    s = eval_steps(300, 8, 1 / 30)
    assert s[0] == 10 and s[-1] == 300 and len(s) == 8
    ratios = np.diff(np.log(s))
    assert np.allclose(ratios, ratios.mean(), atol=0.05)


# ---------------------------------------------------------------- training
def test_same_seed_same_losses_and_observations_contract(shards, tmp_path):
    a = train_proxy(small(), shards, EVEN, steps=30, seed=1, out_dir=tmp_path / "a", run_id="r")
    b = train_proxy(small(), shards, EVEN, steps=30, seed=1, out_dir=tmp_path / "b", run_id="r")
    c = train_proxy(small(), shards, EVEN, steps=30, seed=2, out_dir=tmp_path / "c", run_id="r")
    assert a.ok and b.ok and c.ok
    assert np.array_equal(a.observations["value"], b.observations["value"])
    assert not np.allclose(a.observations["value"], c.observations["value"])

    df = a.observations
    assert set(df.metric) == {"loss", "bpb"}
    assert sorted(df.step.unique()) == eval_steps(30, 4, 1 / 30)
    assert (df.tokens == df.step * 8 * 64).all()
    assert [c for c in df.columns if c.startswith("r:")] == [f"r:{d}" for d in EVEN]
    assert set(df.target) == set(EVEN) and (df.model_size == a.model_size).all()
    # byte tokens: bits per byte = nats per token / ln 2 (up to the end-of-document ids)
    loss, bpb = (df[df.metric == m].value.to_numpy() for m in ("loss", "bpb"))
    assert np.allclose(bpb, loss / math.log(2), rtol=0.01)
    # the run folder holds the same rows and a result record
    on_disk = pd.read_csv(tmp_path / "a" / "r" / "observations.csv")
    assert np.allclose(on_disk["value"], df["value"])
    assert json.loads((tmp_path / "a" / "r" / "result.json").read_text())["status"] == "completed"

    obs_mod = pytest.importorskip("bayesmix.observations")
    obs = obs_mod.Observations.from_frame(df[df.metric == "loss"])
    assert obs.domains == list(EVEN) and obs.has_steps


def test_packed_proxies_equal_proxies_trained_alone(shards, tmp_path):
    mixes = [EVEN, {"python_code": 0.7, "licences": 0.3}, {"c_headers": 0.5, "python_docs": 0.5}]
    packed = train_swarm(
        small(),
        shards,
        mixes,
        steps=25,
        seeds=[3, 4, 5],
        out_dir=tmp_path / "swarm",
        run_ids=["p0", "p1", "p2"],
    )
    for i, (mix, seed) in enumerate(zip(mixes, [3, 4, 5], strict=True)):
        alone = train_proxy(
            small(), shards, mix, steps=25, seed=seed, out_dir=tmp_path / "alone", run_id=f"a{i}"
        )
        assert packed[i].ok and alone.ok
        got, want = packed[i].observations["value"], alone.observations["value"]
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4), (i, np.abs(got - want).max())
        assert packed[i].mixture == alone.mixture


def test_mixture_effect(shards, tmp_path):
    """More of domain X in the mixture -> lower held-out loss on X, within a small CPU budget."""
    rest = 0.1 / 4
    code_heavy = {d: rest for d in EVEN} | {"python_code": 0.9}
    licence_heavy = {d: rest for d in EVEN} | {"licences": 0.9}
    cfg = small(ctx=128)
    res = train_swarm(
        cfg,
        shards,
        [code_heavy, licence_heavy],
        steps=150,
        seeds=[0, 0],
        out_dir=tmp_path,
        run_ids=["code", "licence"],
    )
    code, lic = (loss_table(r).iloc[-1] for r in res)
    assert code["python_code"] < lic["python_code"] - 0.2
    assert lic["licences"] < code["licences"] - 0.2


def test_failures_are_recorded_and_leave_other_runs_intact(shards, tmp_path):
    good = train_proxy(small(), shards, EVEN, steps=10, out_dir=tmp_path, run_id="good")
    before = (tmp_path / "good" / "observations.csv").read_bytes()

    nan = train_proxy(
        small(lr=1e6, grad_clip=0.0, warmup=0),
        shards,
        EVEN,
        steps=20,
        out_dir=tmp_path,
        run_id="nan",
    )
    assert nan.status == "failed" and "non-finite training loss" in nan.reason

    missing = train_proxy(
        small(), tmp_path / "no-shards", EVEN, steps=10, out_dir=tmp_path, run_id="missing"
    )
    assert missing.status == "failed" and "no manifest.json" in missing.reason
    record = json.loads((tmp_path / "missing" / "result.json").read_text())
    assert record["status"] == "failed" and "no manifest.json" in record["reason"]

    bad = train_proxy(
        small(), shards, {"python_code": 0.5, "nope": 0.5}, steps=10, out_dir=tmp_path, run_id="bad"
    )
    assert bad.status == "failed" and "unknown domain" in bad.reason
    with pytest.raises(ProxyRunError, match="sum to 0.5"):
        train_proxy(
            small(),
            shards,
            {"python_code": 0.5},
            steps=10,
            out_dir=tmp_path,
            run_id="strict",
            strict=True,
        )

    assert good.ok and (tmp_path / "good" / "observations.csv").read_bytes() == before


def test_killed_run_resumes_from_checkpoint(shards, tmp_path, monkeypatch):
    full = train_proxy(
        small(), shards, EVEN, steps=30, seed=4, out_dir=tmp_path / "full", run_id="r"
    )

    calls = {"n": 0}
    original = Trainer.record

    def dies_after_two_evaluations(self, run_ids):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a kill: not caught as a run failure
        calls["n"] += 1
        return original(self, run_ids)

    monkeypatch.setattr(Trainer, "record", dies_after_two_evaluations)
    with pytest.raises(KeyboardInterrupt):
        train_proxy(
            small(), shards, EVEN, steps=30, seed=4, out_dir=tmp_path / "killed", run_id="r"
        )
    monkeypatch.setattr(Trainer, "record", original)
    ckpt = torch.load(tmp_path / "killed" / "r" / "checkpoint.pt", weights_only=False)
    assert 0 < ckpt["step"] < 30

    resumed = train_proxy(
        small(), shards, EVEN, steps=30, seed=4, out_dir=tmp_path / "killed", run_id="r"
    )
    assert resumed.ok
    assert np.allclose(resumed.observations["value"], full.observations["value"], rtol=1e-5)

    # a checkpoint of a different run is refused, not silently mixed in
    other = train_proxy(
        small(), shards, EVEN, steps=30, seed=5, out_dir=tmp_path / "killed", run_id="r"
    )
    assert other.status == "failed" and "checkpoint of a different run" in other.reason


def test_cli_train_and_bad_mixture(shards, tmp_path):
    from typer.testing import CliRunner

    from bayesmix.proxy.cli import proxy_app

    runner = CliRunner()
    bad = runner.invoke(
        proxy_app,
        [
            "train",
            "--shards",
            str(shards),
            "--mixture",
            "python_code=0.5,licences=0.2",
            "--out",
            str(tmp_path),
        ],
    )
    assert bad.exit_code == 1 and "sum to 0.7" in bad.output
    size = tmp_path / "small.yaml"
    size.write_text(
        "model: {d_model: 32, n_layers: 1, n_heads: 2}\n"
        "train: {ctx: 32, batch_size: 4, lr: 3.0e-3, warmup: 2, eval_tokens: 256}\n"
    )
    ok = runner.invoke(
        proxy_app,
        [
            "train",
            "--shards",
            str(shards),
            "--mixture",
            "python_code=0.5,licences=0.5",
            "--steps",
            "5",
            "--size",
            str(size),
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "python_code" in ok.output and "bits/byte" in ok.output


def test_gpu_path_imports_only_what_gpu_machines_have():
    allowed = {
        "torch",
        "numpy",
        "pandas",
        "yaml",
        "tokenizers",
        "rich",
        "tqdm",
        "typer",
        "pyarrow",
        "bayesmix",
    }
    root = Path(__file__).resolve().parents[1] / "bayesmix" / "proxy"
    stdlib = __import__("sys").stdlib_module_names
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                assert top in allowed or top in stdlib, f"{path.name} imports {n}"
