"""A built-in sample corpus of real text from five clearly different domains.

Every machine that installs bayesmix has CPython's standard library and the installed
packages (numpy, torch, ...), so the corpus is gathered from there, never downloaded:

| domain         | what                                                              |
|----------------|-------------------------------------------------------------------|
| python_code    | Python source of the standard library (tests excluded)            |
| c_headers      | C and C++ headers shipped with Python and the installed packages  |
| licences       | licence texts of the installed distributions (deduplicated)       |
| python_docs    | the prose of Python's reference documentation (pydoc_data.topics) |
| package_docs   | the long descriptions (READMEs) of the installed distributions    |

The build is reproducible on one machine: files are taken in an order fixed by a hash of
their path (so a cap takes a spread of the tree, not the first letters of the alphabet),
each file is truncated at a line boundary to a per-file cap, and every document is written
with its provenance (source root, relative path, sha256) to ``manifest.json``. Different
Python or package versions give different text: prepare shards where the corpus was built
and carry the shards, not the recipe.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from bayesmix.errors import BayesMixError

CORPUS_VERSION = 1
DOMAINS = ("python_code", "c_headers", "licences", "python_docs", "package_docs")
DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_FILE_BYTES = 48_000
MIN_DOMAIN_BYTES = 50_000


class CorpusError(BayesMixError, RuntimeError):
    """The sample corpus cannot be built on this machine."""


@dataclass(frozen=True)
class _Doc:
    source: str  # e.g. "stdlib:json/decoder.py"
    text: str


def _order_key(label: str) -> str:
    # A hash of the path, not the path itself: a size cap then samples across the whole tree.
    return hashlib.sha256(label.encode()).hexdigest()


def _read_text(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\x00" in raw[:4096]:  # binary file
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _truncate(text: str, limit: int) -> str:
    if len(text.encode()) <= limit:
        return text
    cut = text.encode()[:limit].decode("utf-8", errors="ignore")
    nl = cut.rfind("\n")
    return cut[: nl + 1] if nl > limit // 2 else cut


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    out: list[Path] = []
    for key in ("purelib", "platlib"):
        p = Path(paths[key])
        if p.is_dir() and p not in out:
            out.append(p)
    return out


def _files(root: Path, patterns: tuple[str, ...], skip: Callable[[Path], bool]) -> Iterator[Path]:
    for pattern in patterns:
        for f in root.rglob(pattern):
            if f.is_file() and not skip(f.relative_to(root)):
                yield f


def _python_code() -> Iterator[tuple[str, Path]]:
    std = Path(sysconfig.get_paths()["stdlib"])
    skip_parts = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}

    def skip(rel: Path) -> bool:
        return bool(skip_parts & set(rel.parts))

    for f in _files(std, ("*.py",), skip):
        yield f"stdlib:{f.relative_to(std).as_posix()}", f


def _c_headers() -> Iterator[tuple[str, Path]]:
    inc = Path(sysconfig.get_paths()["include"])
    if inc.is_dir():
        for f in _files(inc, ("*.h",), lambda rel: False):
            yield f"include:{f.relative_to(inc).as_posix()}", f
    for site in _site_dirs():
        for f in _files(site, ("*.h", "*.hpp"), lambda rel: False):
            yield f"site:{f.relative_to(site).as_posix()}", f


def _licences() -> Iterator[tuple[str, Path]]:
    std = Path(sysconfig.get_paths()["stdlib"])
    if (std / "LICENSE.txt").is_file():
        yield "stdlib:LICENSE.txt", std / "LICENSE.txt"
    keys = ("LICEN", "COPYING", "NOTICE")
    for site in _site_dirs():
        for info in site.glob("*.dist-info"):
            for f in info.rglob("*"):
                if f.is_file() and any(k in f.name.upper() for k in keys):
                    yield f"site:{f.relative_to(site).as_posix()}", f


def _package_docs() -> Iterator[tuple[str, str]]:
    for site in _site_dirs():
        for meta in site.glob("*.dist-info/METADATA"):
            text = _read_text(meta)
            if not text:
                continue
            msg = HeaderParser().parsestr(text)
            body = msg.get_payload()
            if not isinstance(body, str) or not body.strip():
                body = msg.get("Description", "") or ""
            if body.strip():
                yield f"site:{meta.relative_to(site).as_posix()}", body.strip() + "\n"


def _python_docs() -> Iterator[tuple[str, str]]:
    try:
        from pydoc_data.topics import topics  # prose of the Python language reference
    except ImportError:
        return
    for name in sorted(topics):
        yield f"pydoc_data.topics:{name}", topics[name]


def _collect(domain: str) -> Iterator[tuple[str, str]]:
    if domain == "python_docs":
        yield from _python_docs()
        return
    if domain == "package_docs":
        yield from _package_docs()
        return
    finder = {"python_code": _python_code, "c_headers": _c_headers, "licences": _licences}[domain]
    for label, path in finder():
        text = _read_text(path)
        if text and text.strip():
            yield label, text


def build_sample_corpus(
    out_dir: str | Path,
    *,
    max_bytes_per_domain: int = DEFAULT_MAX_BYTES,
    max_bytes_per_file: int = DEFAULT_FILE_BYTES,
    progress: bool = True,
) -> dict:
    """Write the sample corpus as one JSONL file per domain (``<out>/<domain>/docs.jsonl``).

    Args:
        out_dir: folder to write; each domain gets a sub-folder, ready for ``prepare``.
        max_bytes_per_domain: stop adding documents to a domain past this many UTF-8 bytes.
        max_bytes_per_file: each document is cut (at a line boundary) to this many bytes.
        progress: show a progress bar per domain.

    Returns:
        The manifest (also written to ``<out>/manifest.json``): per domain the documents'
        sources and sha256, byte counts, and the Python and package versions they came from.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "kind": "bayesmix-sample-corpus",
        "version": CORPUS_VERSION,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": _package_versions(),
        "max_bytes_per_domain": max_bytes_per_domain,
        "max_bytes_per_file": max_bytes_per_file,
        "domains": {},
    }
    for domain in tqdm(DOMAINS, desc="sample corpus", disable=not progress):
        candidates = sorted(_collect(domain), key=lambda lt: _order_key(lt[0]))
        seen: set[str] = set()
        docs: list[dict] = []
        total = 0
        for label, text in candidates:
            text = _truncate(text, max_bytes_per_file)
            digest = hashlib.sha256(text.encode()).hexdigest()
            if digest in seen:  # licence texts repeat across packages
                continue
            seen.add(digest)
            docs.append({"text": text, "source": label, "sha256": digest})
            total += len(text.encode())
            if total >= max_bytes_per_domain:
                break
        if total < MIN_DOMAIN_BYTES:
            raise CorpusError(
                f"sample corpus: domain {domain!r} found only {total} bytes of text on this "
                f"machine (need {MIN_DOMAIN_BYTES}); is the Python installation complete?"
            )
        ddir = out / domain
        ddir.mkdir(exist_ok=True)
        with open(ddir / "docs.jsonl", "w", encoding="utf-8") as fh:
            for d in docs:
                fh.write(json.dumps({"text": d["text"], "source": d["source"]}) + "\n")
        manifest["domains"][domain] = {
            "documents": len(docs),
            "bytes": total,
            "sources": [{"source": d["source"], "sha256": d["sha256"]} for d in docs],
        }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def sample_domains(corpus_dir: str | Path) -> dict[str, Path]:
    """Domain name -> folder, for a corpus written by :func:`build_sample_corpus`."""
    root = Path(corpus_dir)
    if not (root / "manifest.json").is_file():
        raise CorpusError(f"{root}: no sample corpus here (manifest.json missing)")
    names = json.loads((root / "manifest.json").read_text())["domains"]
    return {name: root / name for name in names}


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("numpy", "torch", "pandas", "pyarrow", "tokenizers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
