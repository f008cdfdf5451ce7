"""Domain sets and their updates: each operation, lineage, and one clear error per malformed
update (nothing changes: DomainSet is immutable, and apply checks everything first)."""

from __future__ import annotations

import pytest

from bayesmix.domains import DomainSet, DomainUpdate, DomainUpdateError


@pytest.fixture
def ds() -> DomainSet:
    return DomainSet.create({"web": 1.2e11, "code": 3e10, "books": 2e10, "dclm:news": 1e10})


def test_each_operation(ds: DomainSet) -> None:
    upd = DomainUpdate.parse(
        add=["code_rust:1.2e9"],
        split=["web=news:8e10,forums:4e10"],
        merge=["books,dclm:news=longform"],
        revise=["code:3.3e10"],
    )
    new = ds.apply(upd)
    assert new.domains == ("news", "forums", "code", "longform", "code_rust")
    assert new.version == 2 and new.lineage[-1]["version"] == 2
    assert new.token_counts["longform"] == pytest.approx(3e10)
    assert new.token_counts["code"] == pytest.approx(3.3e10)
    fates = upd.fates(ds)
    assert fates["news"] == ("split", ("web",))
    assert fates["longform"] == ("merged", ("books", "dclm:news"))
    assert fates["code"] == ("revised", ("code",))
    assert fates["code_rust"] == ("added", ())
    assert sorted(upd.affected(ds)) == ["code", "code_rust", "forums", "longform", "news"]
    assert abs(sum(new.natural.values()) - 1) < 1e-12
    # round trips
    assert DomainUpdate.from_dict(upd.to_dict()) == upd
    assert DomainSet.from_dict(new.to_dict()) == new
    again = new.apply(DomainUpdate.remove("forums"))
    assert again.version == 3 and len(again.lineage) == 2 and "forums" not in again


def test_names_with_colons_and_comma_lists(ds: DomainSet) -> None:
    upd = DomainUpdate.parse(add=["dclm:politics:2e9,dclm:sports:1e9"], remove=["books"])
    new = ds.apply(upd)
    assert {"dclm:politics", "dclm:sports"} <= set(new.domains)
    assert new.token_counts["dclm:politics"] == 2e9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": ["wb=a:1e10,b:2e10"]}, "unknown domain 'wb'"),
        ({"split": ["web=a:1e10,b:2e10"]}, "add up to 3e+10, not to 'web''s 1.2e+11"),
        ({"split": ["web=a:1.2e11"]}, "at least two parts"),
        ({"split": ["web=a:6e10,a:6e10"]}, "part names repeat"),
        ({"split": ["web=code:6e10,a:6e10"]}, "part 'code' is an existing domain"),
        ({"split": ["web"]}, "expected 'parent=part:tokens"),
        ({"remove": ["web,code,books,dclm:news"]}, "removes every domain"),
        ({"remove": ["nope"]}, "unknown domain 'nope'"),
        ({"add": ["web:1e9"]}, "'web' exists already"),
        ({"add": ["x"]}, "needs a token count"),
        ({"add": ["x:-3"]}, "must be a positive number"),
        ({"add": ["x:lots"]}, "is not a number"),
        ({"add": ["Bad Name:1e9"]}, "not canonical"),
        ({"add": ["x:1e9", "x:2e9"]}, "touched twice"),
        ({"remove": ["web"], "revise": ["web"]}, "touched twice"),
        ({"merge": ["web=all"]}, "at least two domains"),
        ({"merge": ["web,code=books"]}, "'books' is an existing domain"),
        ({"merge": ["web,web=x"]}, "merged domains repeat"),
        ({}, "the update is empty"),
    ],
)
def test_malformed_updates(ds: DomainSet, kwargs: dict, message: str) -> None:
    before = ds.to_dict()
    with pytest.raises(DomainUpdateError, match=None) as err:
        ds.apply(DomainUpdate.parse(**kwargs))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert ds.to_dict() == before


def test_domain_set_validation() -> None:
    with pytest.raises(DomainUpdateError, match="appears twice"):
        DomainSet(("a", "a"))
    with pytest.raises(DomainUpdateError, match="at least one domain"):
        DomainSet(())
    with pytest.raises(DomainUpdateError, match="unknown domain"):
        DomainSet(("a",), {"b": 1.0})
