"""Domain data -> memory-mapped token shards with a manifest.

``prepare`` reads one folder or glob per domain (JSONL with a ``text`` field, Parquet with a
``text`` column, or plain text files), splits each domain's documents into train and
held-out validation, tokenizes them once and writes per domain ``<domain>.train.bin`` and
``<domain>.val.bin`` (flat token ids, documents separated by an end-of-document token) and
``manifest.json``. The manifest records the tokenizer's identity, token and byte counts per
split (bytes give bits-per-byte) and the sha256 of every input file and shard, so that a
re-run with unchanged inputs reuses the shards and a changed file is detected.

Tokenizers: ``byte`` (UTF-8 bytes + one end-of-document id; nothing to download) or ``bpe``
(a byte-level BPE trained here on the training split with the ``tokenizers`` library).
Nothing is fetched from a hub.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayesmix.errors import BayesMixError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
BPE_EOS = "<|eos|>"
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}
_NAME_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_:.-")


class ProxyDataError(BayesMixError, ValueError):
    """Bad domain data, shards or manifest (one clear message)."""


# ---------------------------------------------------------------- tokenizers
class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, and 256 as end of document."""

    kind = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def identity(self) -> dict:
        return {"kind": "byte", "vocab_size": self.vocab_size, "eos_id": self.eos_id}


class BPETokenizer:
    """A byte-level BPE from the ``tokenizers`` library, stored as ``tokenizer.json``."""

    kind = "bpe"

    def __init__(self, tok) -> None:  # tok: tokenizers.Tokenizer
        self.tok = tok
        eos = tok.token_to_id(BPE_EOS)
        if eos is None:
            raise ProxyDataError(f"BPE tokenizer has no {BPE_EOS!r} token")
        self.eos_id = int(eos)
        self.vocab_size = int(tok.get_vocab_size())

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[BPE_EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception on bad files
            raise ProxyDataError(f"{path}: not a readable tokenizer.json ({exc})") from exc

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text).ids, dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(e.ids, dtype=np.uint32) for e in self.tok.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids])

    def identity(self) -> dict:
        blob = self.tok.to_str().encode()
        return {
            "kind": "bpe",
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "file": "tokenizer.json",
            "sha256": hashlib.sha256(blob).hexdigest(),
        }


# ---------------------------------------------------------------- reading domain files
def check_domain(name: str) -> str:
    if not name or not set(name) <= _NAME_OK or not name[0].isalnum():
        raise ProxyDataError(
            f"domain name {name!r} is not canonical (lower case letters, digits, _ : . - only)"
        )
    return name


def resolve_files(name: str, spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files of one domain: a folder (recursive), a glob, a file, or a list of these."""
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    files: list[Path] = []
    for s in specs:
        p = Path(s).expanduser()
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and _is_data_file(f)]
        elif p.is_file():
            found = [p]
        elif any(ch in str(s) for ch in "*?["):
            found = [Path(f) for f in glob.glob(str(p), recursive=True) if Path(f).is_file()]
        else:
            raise ProxyDataError(f"domain {name!r}: {s} does not exist")
        if not found:
            raise ProxyDataError(f"domain {name!r}: no data files in {s}")
        files.extend(found)
    return sorted({f.resolve() for f in files})


def _is_data_file(f: Path) -> bool:
    return not f.name.startswith(".") and f.name != MANIFEST


def read_documents(path: Path) -> Iterator[str]:
    """Documents of one file: JSONL (``text``), Parquet (``text``) or a whole text file."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=["text"])
        except Exception as exc:  # pyarrow raises several types
            raise ProxyDataError(
                f"{path}: cannot read a 'text' column from Parquet ({exc})"
            ) from exc
        for t in table.column("text").to_pylist():
            if t:
                yield str(t)
        return
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ProxyDataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(obj, dict) or "text" not in obj:
                    raise ProxyDataError(f"{path}:{lineno}: JSON line has no 'text' field")
                if obj["text"]:
                    yield str(obj["text"])
        return
    raw = path.read_bytes()
    if b"\x00" in raw[:4096]:
        raise ProxyDataError(f"{path}: looks binary, not text (use .jsonl, .parquet or text)")
    text = raw.decode("utf-8", errors="replace")
    if text.strip():
        yield text


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- manifest
@dataclass
class Manifest:
    """A prepared shard folder: its manifest and memory-mapped shards."""

    root: Path
    data: dict

    @property
    def domains(self) -> list[str]:
        return list(self.data["domains"])

    @property
    def tokenizer(self) -> dict:
        return self.data["tokenizer"]

    @property
    def vocab_size(self) -> int:
        return int(self.data["tokenizer"]["vocab_size"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data["dtype"])

    def tokens(self, domain: str, split: str) -> np.ndarray:
        """The memory-mapped token ids of one domain's ``train`` or ``val`` split."""
        info = self._domain(domain)[split]
        path = self.root / info["file"]
        if info["tokens"] == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(info["tokens"],))

    def n_tokens(self, domain: str, split: str) -> int:
        return int(self._domain(domain)[split]["tokens"])

    def bytes_per_token(self, domain: str, split: str) -> float:
        info = self._domain(domain)[split]
        return info["bytes"] / max(info["tokens"], 1)

    def load_tokenizer(self) -> ByteTokenizer | BPETokenizer:
        if self.tokenizer["kind"] == "byte":
            return ByteTokenizer()
        return BPETokenizer.load(self.root / self.tokenizer["file"])

    def _domain(self, domain: str) -> dict:
        try:
            return self.data["domains"][domain]
        except KeyError:
            raise ProxyDataError(
                f"unknown domain {domain!r}; the shards in {self.root} have {self.domains}"
            ) from None

    def verify(self, hashes: bool = False) -> None:
        """Check every shard's size (and, with ``hashes``, its sha256) against the manifest."""
        for d in self.domains:
            for split in ("train", "val"):
                info = self.data["domains"][d][split]
                path = self.root / info["file"]
                if not path.is_file():
                    raise ProxyDataError(f"{path}: shard missing (re-run prepare)")
                want = info["tokens"] * self.dtype.itemsize
                if path.stat().st_size != want:
                    raise ProxyDataError(
                        f"{path}: shard is corrupt ({path.stat().st_size} bytes, manifest says "
                        f"{want}); re-run prepare"
                    )
                if hashes and sha256_file(path) != info["sha256"]:
                    raise ProxyDataError(f"{path}: shard content does not match its sha256")


def load_manifest(shards_dir: str | Path, verify_hashes: bool = False) -> Manifest:
    """Open a prepared shard folder; raises ProxyDataError when missing or corrupt."""
    root = Path(shards_dir)
    path = root / MANIFEST
    if not path.is_file():
        raise ProxyDataError(f"{root}: no {MANIFEST} (run `bayesmix proxy prepare` first)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProxyDataError(f"{path}: corrupt manifest ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != "bayesmix-shards":
        raise ProxyDataError(f"{path}: not a bayesmix shard manifest")
    if data.get("format") != FORMAT_VERSION:
        raise ProxyDataError(
            f"{path}: manifest format {data.get('format')}, expected "
            f"{FORMAT_VERSION}; re-run prepare"
        )
    for key in ("tokenizer", "domains", "dtype"):
        if key not in data:
            raise ProxyDataError(f"{path}: corrupt manifest (no {key!r})")
    m = Manifest(root=root, data=data)
    m.verify(hashes=verify_hashes)
    return m


# ---------------------------------------------------------------- prepare
def prepare(
    domains: Mapping[str, str | Path | Sequence[str | Path]],
    out_dir: str | Path,
    *,
    tokenizer: str = "byte",
    vocab_size: int = 8192,
    val_fraction: float = 0.05,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> Manifest:
    """Tokenize each domain's files once into shards; reuse them when nothing changed.

    Args:
        domains: domain name -> folder, glob, file or list of these.
        out_dir: the shard folder to write.
        tokenizer: ``"byte"``, ``"bpe"`` (trained here on the training split), or a path to
            an existing ``tokenizer.json``.
        vocab_size: BPE vocabulary size (ignored for ``byte``).
        val_fraction: share of each domain's text held out, by whole documents (a domain of
            fewer than 10 documents, or of a few long ones, is cut inside its text instead).
        seed: fixes which documents are held out.
        force: rebuild even when the manifest says the shards are up to date.
        progress: progress bars.

    Returns:
        The Manifest of the shard folder.
    """
    from tqdm.auto import tqdm

    if not domains:
        raise ProxyDataError("prepare: no domains given")
    if not 0.0 < val_fraction < 0.5:
        raise ProxyDataError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    out = Path(out_dir)
    files = {check_domain(n): resolve_files(n, s) for n, s in domains.items()}
    inputs = {
        n: [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in fs]
        for n, fs in tqdm(files.items(), desc="hashing inputs", disable=not progress)
    }
    settings = {
        "tokenizer": str(tokenizer),
        "vocab_size": vocab_size,
        "val_fraction": val_fraction,
        "seed": seed,
    }

    if (out / MANIFEST).is_file() and not force:
        try:
            old = load_manifest(out)
        except ProxyDataError as exc:
            log.warning("rebuilding shards: %s", exc)
        else:
            changes = _changes(old.data, inputs, settings)
            if not changes:
                log.info("shards in %s are up to date; reusing them", out)
                return old
            log.warning("rebuilding shards in %s: %s", out, "; ".join(changes[:5]))

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    docs: dict[str, tuple[list[str], list[str]]] = {}
    for name, fs in tqdm(files.items(), desc="reading domains", disable=not progress):
        texts = [t for f in fs for t in read_documents(f)]
        if not texts:
            raise ProxyDataError(f"domain {name!r}: the files hold no text")
        docs[name] = _split_docs(texts, val_fraction, rng)

    tok: ByteTokenizer | BPETokenizer
    if tokenizer == "byte":
        tok = ByteTokenizer()
    elif tokenizer == "bpe":
        if vocab_size < 300:
            raise ProxyDataError(f"BPE vocab_size must be at least 300, got {vocab_size}")
        train_texts = (t for tr, _ in docs.values() for t in tr)
        tok = BPETokenizer.train(train_texts, vocab_size)
        tok.tok.save(str(out / "tokenizer.json"))
    elif Path(tokenizer).is_file():
        tok = BPETokenizer.load(tokenizer)
        tok.tok.save(str(out / "tokenizer.json"))
    else:
        raise ProxyDataError(
            f"tokenizer must be 'byte', 'bpe' or a tokenizer.json, got {tokenizer!r}"
        )
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32

    manifest: dict = {
        "kind": "bayesmix-shards",
        "format": FORMAT_VERSION,
        "tokenizer": tok.identity(),
        "dtype": np.dtype(dtype).name,
        "settings": settings,
        "domains": {},
    }
    bar = tqdm(
        total=sum(len(a) + len(b) for a, b in docs.values()),
        desc="tokenizing",
        unit="doc",
        disable=not progress,
    )
    for name, (train, val) in docs.items():
        entry: dict = {"inputs": inputs[name], "documents": {"train": len(train), "val": len(val)}}
        for split, texts in (("train", train), ("val", val)):
            fname = f"{name}.{split}.bin"
            n_tok, n_bytes = _write_shard(out / fname, texts, tok, dtype, bar)
            entry[split] = {
                "file": fname,
                "tokens": n_tok,
                "bytes": n_bytes,
                "sha256": sha256_file(out / fname),
            }
        manifest["domains"][name] = entry
    bar.close()
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)  # the manifest appears only once every shard is written
    return Manifest(root=out, data=manifest)


def _split_docs(
    texts: list[str], frac: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    total = sum(len(t) for t in texts)
    target = frac * total
    val_idx: list[int] = []
    acc = 0
    if len(texts) >= 10:
        # Whole documents in a seeded random order, skipping any that would overshoot the
        # held-out share by much (one long file must not become a third of the domain).
        for i in rng.permutation(len(texts)):
            if acc >= target:
                break
            if acc + len(texts[i]) <= 1.5 * target:
                val_idx.append(int(i))
                acc += len(texts[i])
    if acc < 0.5 * target:
        # Too few (or too long) documents to hold some out whole: cut the joined text.
        joined = "\n".join(texts)
        cut = int(len(joined) * (1 - frac))
        return [joined[:cut]], [joined[cut:]]
    chosen = set(val_idx)
    return (
        [t for i, t in enumerate(texts) if i not in chosen],
        [texts[i] for i in sorted(val_idx)],
    )


def _write_shard(path: Path, texts: list[str], tok, dtype, bar) -> tuple[int, int]:
    n_tok = n_bytes = 0
    with open(path, "wb") as fh:
        for start in range(0, len(texts), 256):
            chunk = texts[start : start + 256]
            for ids in tok.encode_batch(chunk):
                arr = np.empty(len(ids) + 1, dtype=dtype)
                arr[:-1] = ids
                arr[-1] = tok.eos_id
                fh.write(arr.tobytes())
                n_tok += len(arr)
            n_bytes += sum(len(t.encode("utf-8")) for t in chunk)
            bar.update(len(chunk))
    return n_tok, n_bytes


def _changes(old: dict, inputs: dict, settings: dict) -> list[str]:
    out = []
    if old.get("settings") != settings:
        out.append(f"settings changed ({old.get('settings')} -> {settings})")
    old_domains = old.get("domains", {})
    for name in sorted(set(old_domains) ^ set(inputs)):
        out.append(f"domain {name!r} {'added' if name in inputs else 'removed'}")
    for name in set(old_domains) & set(inputs):
        before = {f["path"]: f["sha256"] for f in old_domains[name].get("inputs", [])}
        now = {f["path"]: f["sha256"] for f in inputs[name]}
        for p in sorted(set(before) | set(now)):
            if before.get(p) != now.get(p):
                what = "new" if p not in before else "removed" if p not in now else "changed"
                out.append(f"{what} file {p} in domain {name!r}")
    return out


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Mean loss in nats per token -> bits per UTF-8 byte."""
    return loss_nats / (bytes_per_token * math.log(2))
