"""Sample corpus, shard preparation, manifest checks, the mixture sampler, entropy mixtures."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from bayesmix.proposers.swarms import entropy_mixture
from bayesmix.proxy.corpus import DOMAINS, build_sample_corpus, sample_domains
from bayesmix.proxy.data import ByteTokenizer, ProxyDataError, load_manifest, prepare
from bayesmix.proxy.entropy import domain_entropies
from bayesmix.proxy.sampler import (
    MixtureSampler,
    RepetitionError,
    RepetitionWarning,
    normalise_mixture,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    manifest = build_sample_corpus(root, max_bytes_per_domain=150_000, progress=False)
    return root, manifest


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    return prepare(sample_domains(corpus[0]), out, progress=False)


def test_sample_corpus_has_five_real_domains_with_provenance(corpus):
    root, manifest = corpus
    assert list(manifest["domains"]) == list(DOMAINS)
    for d, info in manifest["domains"].items():
        assert info["bytes"] >= 50_000, d
        assert all("source" in s and len(s["sha256"]) == 64 for s in info["sources"])
        first = json.loads((root / d / "docs.jsonl").open().readline())
        assert first["text"].strip()
    # Real text of the kind the domain names: Python code has defs, C headers #define/#include.
    code = (root / "python_code" / "docs.jsonl").read_text()
    headers = (root / "c_headers" / "docs.jsonl").read_text()
    assert "def " in code and ("#define" in headers or "#include" in headers)
    assert "licen" in (root / "licences" / "docs.jsonl").read_text().lower()


def test_sample_corpus_is_reproducible(corpus, tmp_path):
    again = build_sample_corpus(tmp_path, max_bytes_per_domain=150_000, progress=False)
    assert again["domains"] == corpus[1]["domains"]


def test_prepare_writes_shards_and_manifest(shards):
    assert shards.domains == list(DOMAINS)
    assert shards.tokenizer["kind"] == "byte"
    tok = ByteTokenizer()
    for d in shards.domains:
        train, val = shards.tokens(d, "train"), shards.tokens(d, "val")
        assert len(train) > 10 * len(val) > 0
        assert train.max() <= tok.eos_id
        assert math.isclose(shards.bytes_per_token(d, "val"), 1.0, abs_tol=0.01)
    text = tok.decode(shards.tokens("python_code", "train")[:2000])
    assert "import" in text or "def" in text


def test_prepare_reuses_and_detects_changes(tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x.txt").write_text("alpha beta gamma\n" * 400)
    (b / "y.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i} " * 30}) for i in range(40)))
    out = tmp_path / "shards"
    m1 = prepare({"a": a, "b": b / "*.jsonl"}, out, progress=False)
    stamp = (out / "a.train.bin").stat().st_mtime_ns
    m2 = prepare({"a": a, "b": b / "*.jsonl"}, out, progress=False)
    assert (out / "a.train.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert m2.data == m1.data
    (a / "x.txt").write_text("alpha beta gamma delta\n" * 400)
    with caplog.at_level("WARNING"):
        m3 = prepare({"a": a, "b": b / "*.jsonl"}, out, progress=False)
    assert "changed file" in caplog.text
    assert m3.n_tokens("a", "train") + m3.n_tokens("a", "val") > m1.n_tokens(
        "a", "train"
    ) + m1.n_tokens("a", "val")


def test_prepare_reads_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"text": [f"row {i} text" * 20 for i in range(30)]}), tmp_path / "d.parquet"
    )
    m = prepare({"pq": tmp_path / "d.parquet"}, tmp_path / "s", progress=False)
    assert (
        m.data["domains"]["pq"]["documents"]["train"] + m.data["domains"]["pq"]["documents"]["val"]
        == 30
    )


def test_prepare_bpe_tokenizer(tmp_path, corpus):
    doms = {d: p for d, p in sample_domains(corpus[0]).items() if d in ("python_code", "licences")}
    m = prepare(doms, tmp_path / "bpe", tokenizer="bpe", vocab_size=600, progress=False)
    assert m.tokenizer["kind"] == "bpe" and m.vocab_size == 600 and len(m.tokenizer["sha256"]) == 64
    tok = m.load_tokenizer()
    ids = np.asarray(m.tokens("licences", "val"))
    first_doc = ids[: int(np.argmax(ids == tok.eos_id))]
    assert len(tok.decode(first_doc)) > 1.5 * len(first_doc)  # BPE packs several bytes a token
    assert m.bytes_per_token("licences", "val") > 1.5


@pytest.mark.parametrize(
    "domains, message",
    [
        ({"a": "/does/not/exist"}, "does not exist"),
        ({"Bad Name": "."}, "not canonical"),
        ({}, "no domains"),
    ],
)
def test_prepare_rejects_bad_input(tmp_path, domains, message):
    with pytest.raises(ProxyDataError, match=message):
        prepare(domains, tmp_path / "s", progress=False)


def test_prepare_rejects_bad_jsonl(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ProxyDataError, match=r"x.jsonl:2: JSON line has no 'text' field"):
        prepare({"d": tmp_path / "d"}, tmp_path / "s", progress=False)


def test_corrupt_manifest_and_shard_are_reported(shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards.root, copy)
    with open(copy / "licences.train.bin", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(ProxyDataError, match="licences.train.bin: shard is corrupt"):
        load_manifest(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ProxyDataError, match="corrupt manifest"):
        load_manifest(copy)
    with pytest.raises(ProxyDataError, match="no manifest.json"):
        load_manifest(tmp_path / "empty")


# ---------------------------------------------------------------- sampler
def test_normalise_mixture_checks():
    doms = ["a", "b", "c"]
    assert normalise_mixture({"a": 0.5, "b": 0.5}, doms) == {"a": 0.5, "b": 0.5, "c": 0.0}
    with pytest.raises(ProxyDataError, match="unknown domain"):
        normalise_mixture({"a": 0.5, "z": 0.5}, doms)
    with pytest.raises(ProxyDataError, match="sum to 0.9"):
        normalise_mixture({"a": 0.5, "b": 0.4}, doms)
    with pytest.raises(ProxyDataError, match="not a number >= 0"):
        normalise_mixture({"a": 1.5, "b": -0.5}, doms)


def test_sampler_is_deterministic_and_proportional(shards):
    mix = {"python_code": 0.5, "c_headers": 0.3, "licences": 0.2}
    s1 = MixtureSampler(shards, mix, batch_size=16, ctx=64, seed=3)
    s2 = MixtureSampler(shards, mix, batch_size=16, ctx=64, seed=3)
    s3 = MixtureSampler(shards, mix, batch_size=16, ctx=64, seed=4)
    b1, b2 = s1.starts_block(0, 50), s2.starts_block(0, 50)
    assert np.array_equal(b1, b2)
    assert not np.array_equal(b1, s3.starts_block(0, 50))
    assert np.array_equal(s1.batch_starts(37), b1[37])  # stateless in the step (resume)
    counts = s1.counts_until(50)
    want = np.array([mix.get(d, 0) for d in shards.domains]) * 800
    assert np.abs(counts - want).max() <= 3  # low-discrepancy, not multinomial noise
    assert counts[shards.domains.index("python_docs")] == 0
    # every window lies inside its own domain's training tokens
    ends = np.cumsum([shards.n_tokens(d, "train") for d in shards.domains])
    dom = np.searchsorted(ends, b1.ravel(), side="right")
    assert np.all(b1.ravel() + 65 <= ends[dom])


def test_repetition_limit(shards):
    s = MixtureSampler(
        shards, {"licences": 1.0}, batch_size=16, ctx=64, max_epochs=1.0, on_repeat="error"
    )
    s.check_repetition(10)  # 10 x 16 x 64 tokens: well under one epoch
    with pytest.raises(RepetitionError, match="licences"):
        s.check_repetition(5000)
    w = MixtureSampler(
        shards, {"licences": 1.0}, batch_size=16, ctx=64, max_epochs=1.0, on_repeat="warn"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        use = w.check_repetition(5000)
    assert any(issubclass(c.category, RepetitionWarning) for c in caught)
    assert use["licences"].epochs > 1


# ---------------------------------------------------------------- entropy
def test_entropy_mixture(shards):
    h = domain_entropies(shards)
    assert set(h.columns) >= {"shannon", "conditional", "joint"}
    assert (h["conditional"] < h["shannon"]).all()  # knowing the previous byte helps
    r = entropy_mixture(shards.root)
    assert math.isclose(r.sum(), 1.0) and (r > 0).all()
    expect = np.exp(h["conditional"]) / np.exp(h["conditional"]).sum()
    assert np.allclose(r.to_numpy(), expect.to_numpy())
    assert r.idxmax() == h["conditional"].idxmax()
    with pytest.raises(ValueError, match="kind"):
        entropy_mixture(shards, kind="nope")
