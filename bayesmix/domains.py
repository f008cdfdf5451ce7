"""Domain sets that change: versions, lineage, and the updates between them.

    ds = DomainSet.create({"web": 1.2e11, "code": 3e10, "books": 2e10})
    upd = DomainUpdate.parse(add=["code_rust:1.2e9"], split=["web=news:8e10,forums:4e10"])
    ds2 = ds.apply(upd)              # version 2; ds is unchanged (DomainSet is immutable)
    ds2.lineage[-1]                   # what update made version 2
    upd.fates(ds)                     # per new domain: unchanged, added, part of a split, ...

Operations: ``add`` (a new domain and its token count), ``remove``, ``split`` (a domain into
parts whose token counts add up to the parent's, within ``SPLIT_TOLERANCE``), ``merge``
(several domains into one, whose count is their sum) and ``revise`` (same name, changed
content; optionally a new token count). One update may hold several operations, each domain
touched by at most one of them. Every check runs before anything is built, and a failed
update raises one ``DomainUpdateError`` naming the problem: nothing changes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bayesmix.errors import BayesMixError
from bayesmix.observations import ObservationsError, check_domain_name

SPLIT_TOLERANCE = 0.01  # parts' token counts must add up to the parent's within 1 %

OpKind = Literal["add", "remove", "split", "merge", "revise"]
Fate = Literal["unchanged", "added", "split", "merged", "revised"]


class DomainUpdateError(BayesMixError, ValueError):
    """A domain-set update is malformed or does not fit the domain set; nothing was changed."""


def _name(name: Any, where: str) -> str:
    try:
        return check_domain_name(name, where)
    except ObservationsError as exc:
        raise DomainUpdateError(str(exc)) from None


def shown(value: Any) -> str:
    """A value in a message: strings quoted, numbers plain (never 'np.float64(nan)')."""
    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # a numpy scalar
    return str(value)


def _count(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DomainUpdateError(f"{where}: token count {shown(value)} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise DomainUpdateError(
            f"{where}: token count must be a positive number, got {shown(value)}"
        )
    return v


# ------------------------------------------------------------------------------ operations
@dataclass(frozen=True)
class DomainOp:
    """One operation. ``kind`` and the fields it uses:

    add: ``name``, ``tokens``; remove: ``name``; split: ``name`` (the parent) and ``parts``
    (part -> tokens); merge: ``sources`` (the merged domains) and ``name`` (the result);
    revise: ``name`` and optionally ``tokens`` (None keeps the old count).
    """

    kind: OpKind
    name: str
    tokens: float | None = None
    parts: tuple[tuple[str, float], ...] = ()
    sources: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "add":
            # A warm start may add a domain whose token count the study does not know.
            return f"add {self.name}" + (f" ({self.tokens:.3g} tokens)" if self.tokens else "")
        if self.kind == "remove":
            return f"remove {self.name}"
        if self.kind == "split":
            return f"split {self.name} into " + ", ".join(f"{p} ({n:.3g})" for p, n in self.parts)
        if self.kind == "merge":
            return f"merge {', '.join(self.sources)} into {self.name}"
        return f"revise {self.name}" + (f" ({self.tokens:.3g} tokens)" if self.tokens else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "tokens": self.tokens,
            "parts": [list(p) for p in self.parts],
            "sources": list(self.sources),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DomainOp:
        return cls(
            kind=d["kind"],
            name=d["name"],
            tokens=d.get("tokens"),
            parts=tuple((str(p), float(n)) for p, n in d.get("parts", [])),
            sources=tuple(d.get("sources", [])),
        )


def _split_count(spec: str, where: str) -> tuple[str, float]:
    """'name:1.2e9' -> (name, 1.2e9); the count follows the last ':' (names may hold ':')."""
    if ":" not in spec:
        raise DomainUpdateError(f"{where}: {spec!r} needs a token count, as in 'code_rust:1.2e9'")
    name, _, count = spec.strip().rpartition(":")
    return _name(name.strip(), where), _count(count.strip(), f"{where} {name.strip()!r}")


@dataclass(frozen=True)
class DomainUpdate:
    """An ordered list of operations applied together (see the module docstring)."""

    ops: tuple[DomainOp, ...] = ()
    note: str = ""

    # ---------------------------------------------------------------- constructors
    @classmethod
    def add(cls, name: str, tokens: float) -> DomainUpdate:
        return cls((DomainOp("add", _name(name, "add"), _count(tokens, f"add {name!r}")),))

    @classmethod
    def remove(cls, *names: str) -> DomainUpdate:
        return cls(tuple(DomainOp("remove", _name(n, "remove")) for n in names))

    @classmethod
    def split(cls, parent: str, parts: Mapping[str, float]) -> DomainUpdate:
        items = tuple(
            (_name(p, f"split {parent!r}"), _count(n, f"split part {p!r}"))
            for p, n in parts.items()
        )
        return cls((DomainOp("split", _name(parent, "split"), parts=items),))

    @classmethod
    def merge(cls, sources: Sequence[str], into: str) -> DomainUpdate:
        srcs = tuple(_name(s, "merge") for s in sources)
        return cls((DomainOp("merge", _name(into, "merge"), sources=srcs),))

    @classmethod
    def revise(cls, name: str, tokens: float | None = None) -> DomainUpdate:
        t = None if tokens is None else _count(tokens, f"revise {name!r}")
        return cls((DomainOp("revise", _name(name, "revise"), tokens=t),))

    @classmethod
    def between(
        cls,
        old: Sequence[str],
        new: Sequence[str],
        token_counts: Mapping[str, float] | None = None,
    ) -> DomainUpdate:
        """The update from the domains ``old`` to ``new`` by name: a name in both is the same
        domain, the others are removed or added (``token_counts``: the added ones' counts,
        where known). Empty when the names are the same: the identity, whose ``fates`` keep
        every domain (``apply`` refuses it: a new version must change something)."""
        counts = token_counts or {}
        kept = set(old) & set(new)
        removed = tuple(DomainOp("remove", _name(d, "remove")) for d in old if d not in kept)
        added = tuple(
            DomainOp(
                "add",
                _name(d, "add"),
                tokens=_count(counts[d], f"add {d!r}") if counts.get(d) else None,
            )
            for d in new
            if d not in kept
        )
        return cls(removed + added)

    def __add__(self, other: DomainUpdate) -> DomainUpdate:
        return DomainUpdate(self.ops + other.ops, self.note or other.note)

    @classmethod
    def parse(
        cls,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        split: Iterable[str] = (),
        merge: Iterable[str] = (),
        revise: Iterable[str] = (),
        note: str = "",
    ) -> DomainUpdate:
        """From the CLI's strings: ``add`` 'name:tokens'; ``remove`` 'name'; ``split``
        'parent=part:tokens,part:tokens'; ``merge`` 'a,b=merged'; ``revise`` 'name' or
        'name:tokens'. Comma-separated lists are accepted for add, remove and revise."""
        ops: list[DomainOp] = []
        for spec in _items(add):
            name, tokens = _split_count(spec, "--add")
            ops.append(DomainOp("add", name, tokens=tokens))
        for spec in _items(remove):
            ops.append(DomainOp("remove", _name(spec.strip(), "--remove")))
        for spec in split:
            if "=" not in spec:
                raise DomainUpdateError(
                    f"--split {spec!r}: expected 'parent=part:tokens,part:tokens'"
                )
            parent, _, rest = spec.partition("=")
            parent = _name(parent.strip(), "--split")
            parts = tuple(
                _split_count(p, f"--split {parent}") for p in rest.split(",") if p.strip()
            )
            ops.append(DomainOp("split", parent, parts=parts))
        for spec in merge:
            if "=" not in spec:
                raise DomainUpdateError(f"--merge {spec!r}: expected 'a,b=merged'")
            left, _, into = spec.partition("=")
            sources = tuple(_name(s.strip(), "--merge") for s in left.split(",") if s.strip())
            ops.append(DomainOp("merge", _name(into.strip(), "--merge"), sources=sources))
        for spec in _items(revise):
            if ":" in spec and _looks_like_count(spec.rpartition(":")[2]):
                name, tokens = _split_count(spec, "--revise")
                ops.append(DomainOp("revise", name, tokens=tokens))
            else:
                ops.append(DomainOp("revise", _name(spec.strip(), "--revise")))
        if not ops:
            raise DomainUpdateError(
                "the update is empty: give at least one of --add, --remove, --split, --merge, "
                "--revise"
            )
        return cls(tuple(ops), note)

    # ---------------------------------------------------------------- views
    def describe(self) -> str:
        return "; ".join(op.describe() for op in self.ops) or "no change"

    def to_dict(self) -> dict[str, Any]:
        return {"ops": [op.to_dict() for op in self.ops], "note": self.note}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DomainUpdate:
        return cls(tuple(DomainOp.from_dict(o) for o in d.get("ops", [])), d.get("note", ""))

    def check(self, dset: DomainSet) -> None:
        """Raise DomainUpdateError if the update does not fit ``dset`` (nothing is built)."""
        _not_empty(self)
        self._result(dset)

    def fates(self, dset: DomainSet) -> dict[str, tuple[Fate, tuple[str, ...]]]:
        """Per domain of the new set: (fate, its old domains). unchanged: (itself,); added:
        (); split: (parent,); merged: the sources; revised: (itself,)."""
        return self._result(dset)[2]

    def removed(self, dset: DomainSet) -> list[str]:
        """Old domains that are gone without a successor (removed, not split or merged)."""
        return [op.name for op in self.ops if op.kind == "remove"]

    def affected(self, dset: DomainSet) -> list[str]:
        """New domains that are not simply carried over (added, split parts, merged, revised)."""
        return [d for d, (fate, _) in self.fates(dset).items() if fate != "unchanged"]

    # ---------------------------------------------------------------- application
    def _result(
        self, dset: DomainSet
    ) -> tuple[list[str], dict[str, float], dict[str, tuple[Fate, tuple[str, ...]]]]:
        old = list(dset.domains)
        known = set(old)
        touched: dict[str, str] = {}

        def touch(name: str, what: str) -> None:
            if name in touched:
                raise DomainUpdateError(
                    f"domain {name!r} is touched twice in one update ({touched[name]}; {what}); "
                    "apply them as two updates"
                )
            touched[name] = what

        def need(name: str, what: str) -> None:
            if name not in known:
                raise DomainUpdateError(
                    f"{what}: unknown domain {name!r} (the domain set, version "
                    f"{dset.version}, has {', '.join(old)})"
                )

        created: list[str] = []
        for op in self.ops:
            what = op.describe()
            if op.kind == "add":
                if op.name in known:
                    raise DomainUpdateError(f"{what}: domain {op.name!r} exists already")
                touch(op.name, what)
                created.append(op.name)
            elif op.kind in ("remove", "revise"):
                need(op.name, what)
                touch(op.name, what)
            elif op.kind == "split":
                need(op.name, what)
                touch(op.name, what)
                if len(op.parts) < 2:
                    raise DomainUpdateError(f"{what}: a split needs at least two parts")
                names = [p for p, _ in op.parts]
                if len(set(names)) != len(names):
                    raise DomainUpdateError(f"{what}: part names repeat")
                parent_tokens = dset.token_counts.get(op.name)
                total = sum(n for _, n in op.parts)
                if parent_tokens and abs(total - parent_tokens) > SPLIT_TOLERANCE * parent_tokens:
                    raise DomainUpdateError(
                        f"{what}: the parts' token counts add up to {total:.4g}, not to "
                        f"{op.name!r}'s {parent_tokens:.4g} (tolerance "
                        f"{SPLIT_TOLERANCE:.0%})"
                    )
                for p in names:
                    if p in known:
                        raise DomainUpdateError(f"{what}: part {p!r} is an existing domain")
                    touch(p, what)
                    created.append(p)
            elif op.kind == "merge":
                if len(op.sources) < 2:
                    raise DomainUpdateError(f"{what}: a merge needs at least two domains")
                if len(set(op.sources)) != len(op.sources):
                    raise DomainUpdateError(f"{what}: merged domains repeat")
                for s in op.sources:
                    need(s, what)
                    touch(s, what)
                if op.name in known and op.name not in op.sources:
                    raise DomainUpdateError(f"{what}: {op.name!r} is an existing domain")
                if op.name not in op.sources:
                    touch(op.name, what)
                created.append(op.name)
            else:
                raise DomainUpdateError(f"unknown operation {op.kind!r}")
        if len(set(created)) != len(created):
            dup = next(c for c in created if created.count(c) > 1)
            raise DomainUpdateError(f"the update creates domain {dup!r} twice")

        # Build the new list: survivors in their old order, each op's results in place.
        domains: list[str] = []
        counts: dict[str, float] = {}
        fates: dict[str, tuple[Fate, tuple[str, ...]]] = {}
        by_old = {}
        for op in self.ops:
            if op.kind in ("remove", "revise", "split"):
                by_old[op.name] = op
            elif op.kind == "merge":
                for s in op.sources:
                    by_old[s] = op
        emitted: set[int] = set()
        for d in old:
            op = by_old.get(d)
            if op is None:
                domains.append(d)
                counts[d] = dset.token_counts.get(d, 0.0)
                fates[d] = ("unchanged", (d,))
            elif op.kind == "revise":
                domains.append(d)
                counts[d] = op.tokens if op.tokens else dset.token_counts.get(d, 0.0)
                fates[d] = ("revised", (d,))
            elif op.kind == "split":
                for p, n in op.parts:
                    domains.append(p)
                    counts[p] = n
                    fates[p] = ("split", (d,))
            elif op.kind == "merge" and id(op) not in emitted:
                emitted.add(id(op))
                domains.append(op.name)
                counts[op.name] = sum(dset.token_counts.get(s, 0.0) for s in op.sources)
                fates[op.name] = ("merged", op.sources)
        for op in self.ops:
            if op.kind == "add":
                domains.append(op.name)
                counts[op.name] = float(op.tokens or 0.0)
                fates[op.name] = ("added", ())
        if not domains:
            raise DomainUpdateError(
                f"the update removes every domain ({self.describe()}); a domain set needs at "
                "least one domain"
            )
        return domains, counts, fates


def _not_empty(update: DomainUpdate) -> None:
    if not update.ops:
        raise DomainUpdateError("the update is empty: it has no operation")


def _items(specs: Iterable[str]) -> list[str]:
    out = []
    for spec in specs:
        out += [s.strip() for s in str(spec).split(",") if s.strip()]
    return out


def _looks_like_count(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------ domain set
@dataclass(frozen=True)
class DomainSet:
    """Training domains with token counts, a version, and the updates that led here.

    ``lineage``: one entry per update applied since version 1: {"version", "update"}.
    """

    domains: tuple[str, ...]
    token_counts: Mapping[str, float] = field(default_factory=dict)
    version: int = 1
    lineage: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        names = tuple(_name(d, "DomainSet") for d in self.domains)
        if not names:
            raise DomainUpdateError("a domain set needs at least one domain")
        if len(set(names)) != len(names):
            dup = next(d for d in names if names.count(d) > 1)
            raise DomainUpdateError(f"domain {dup!r} appears twice in the domain set")
        unknown = [d for d in self.token_counts if d not in names]
        if unknown:
            raise DomainUpdateError(f"token counts for unknown domain(s): {', '.join(unknown)}")
        for d, n in self.token_counts.items():
            _count(n, f"domain {d!r}")
        object.__setattr__(self, "domains", names)
        object.__setattr__(
            self, "token_counts", {d: float(n) for d, n in self.token_counts.items()}
        )

    @classmethod
    def create(cls, token_counts: Mapping[str, float] | Sequence[str]) -> DomainSet:
        if isinstance(token_counts, Mapping):
            return cls(tuple(token_counts), dict(token_counts))
        return cls(tuple(token_counts), {})

    def __len__(self) -> int:
        return len(self.domains)

    def __contains__(self, name: object) -> bool:
        return name in self.domains

    @property
    def natural(self) -> dict[str, float]:
        """Each domain's share of the tokens (uniform when counts are missing)."""
        counts = [self.token_counts.get(d, 0.0) for d in self.domains]
        total = sum(counts)
        if total <= 0 or any(c <= 0 for c in counts):
            return {d: 1.0 / len(self.domains) for d in self.domains}
        return {d: c / total for d, c in zip(self.domains, counts, strict=True)}

    def apply(self, update: DomainUpdate) -> DomainSet:
        """The next version; raises DomainUpdateError (and changes nothing) if malformed."""
        _not_empty(update)
        domains, counts, _ = update._result(self)
        counts = {d: n for d, n in counts.items() if n > 0}
        entry = {"version": self.version + 1, "update": update.to_dict()}
        return DomainSet(tuple(domains), counts, self.version + 1, (*self.lineage, entry))

    def to_dict(self) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "token_counts": dict(self.token_counts),
            "version": self.version,
            "lineage": [dict(e) for e in self.lineage],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DomainSet:
        return cls(
            tuple(d["domains"]),
            dict(d.get("token_counts", {})),
            int(d.get("version", 1)),
            tuple(d.get("lineage", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
