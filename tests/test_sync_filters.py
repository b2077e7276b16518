"""Tag selection: anchored regexes, Masterminds/semver ranges (skopeo's images-by-semver), latest N."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regtool.errors import UsageError
from regtool.sync.filters import (
    TagSelection,
    is_signature_tag,
    needs_listing,
    parse_semver_range,
    parse_version,
    select_tags,
)

DIGEST = "sha256:" + "ab" * 32
SIG = "sha256-" + "ab" * 32

# --------------------------------------------------------------------------- signature tags


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        (SIG + ".sig", True),
        (SIG + ".att", True),
        (SIG + ".sbom", True),
        (SIG, True),  # the referrers API fallback tag
        ("sha512-" + "cd" * 64 + ".sig", True),
        (SIG + ".txt", False),
        ("sha256-abc.sig", False),
        ("sha256-" + "AB" * 32, False),
        ("latest", False),
        ("v1.2.3", False),
    ],
)
def test_signature_tags(tag: str, expected: bool) -> None:
    assert is_signature_tag(tag) is expected


def test_signature_tags_are_never_selected() -> None:
    tags = ["1.0", SIG + ".sig", SIG + ".att", SIG, "latest"]
    assert select_tags(tags, TagSelection()) == ["1.0", "latest"]
    assert select_tags(tags, TagSelection(include=(".*",))) == ["1.0", "latest"]
    assert select_tags(tags, TagSelection(include=(".*",), unanchored=True)) == ["1.0", "latest"]
    with pytest.raises(UsageError, match="signature"):
        TagSelection(exact=(SIG + ".sig",))


# --------------------------------------------------------------------------- regexes


def test_include_is_anchored() -> None:
    tags = ["3", "3.1", "13", "3-alpine", "v3"]
    assert select_tags(tags, TagSelection(include=("3",))) == ["3"]
    assert select_tags(tags, TagSelection(include=(r"3(\.\d+)?",))) == ["3", "3.1"]
    # skopeo's images-by-tag-regex searches (Go MatchString): the unanchored mode keeps that.
    assert select_tags(tags, TagSelection(include=("3",), unanchored=True)) == ["13", "3", "3-alpine", "3.1", "v3"]


def test_exclude_wins() -> None:
    tags = ["1.0", "1.0-rc1", "1.1", "2.0"]
    sel = TagSelection(include=(r"\d+\.\d+(-rc\d+)?",), exclude=(r".*-rc\d+", "2.0"))
    assert select_tags(tags, sel) == ["1.0", "1.1"]
    # exclude also beats semver and latest
    assert select_tags(tags, TagSelection(semver=">=1", exclude=("1.1",))) == ["1.0", "2.0"]
    assert select_tags(tags, TagSelection(latest=2, exclude=("2.0",))) == ["1.0", "1.1"]


def test_exact_tag_excluded_is_a_config_error() -> None:
    with pytest.raises(UsageError, match="excluded by exclude pattern"):
        TagSelection(exact=("latest",), exclude=("lat.*",))


def test_bad_regex_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"invalid regular expression '\(unclosed'"):
        TagSelection(include=("(unclosed",))


# --------------------------------------------------------------------------- everything / exact / digests


def test_empty_selection_takes_every_tag_sorted_and_unique() -> None:
    tags = ["b", "a", "c", "a"]
    assert select_tags(tags, TagSelection()) == ["a", "b", "c"]
    assert needs_listing(TagSelection())


def test_exact_and_digests_skip_listing() -> None:
    sel = TagSelection(exact=("latest", "1.0"))
    assert not needs_listing(sel)
    assert select_tags([], sel) == ["1.0", "latest"]
    sel = TagSelection(digests=(DIGEST,))
    assert not needs_listing(sel)
    assert select_tags([], sel) == []
    assert sel.digests == (DIGEST,)
    # exact tags are kept even when the listing does not show them (the copy reports them missing)
    assert select_tags(["2.0"], TagSelection(include=("2.0",), exact=("1.0",))) == ["1.0", "2.0"]
    assert needs_listing(TagSelection(exact=("x",), semver=">1"))
    assert needs_listing(TagSelection(exact=("x",), latest=1))


def test_exact_tag_and_digest_syntax() -> None:
    with pytest.raises(UsageError, match="invalid tag"):
        TagSelection(exact=("-bad",))
    with pytest.raises(UsageError, match="invalid tag"):
        TagSelection(exact=("a" * 129,))
    with pytest.raises(UsageError, match="digest"):
        TagSelection(digests=("sha256:abc",))
    with pytest.raises(UsageError, match="latest"):
        TagSelection(latest=0)


# --------------------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", "1.0.0"),
        ("1.2", "1.2.0"),
        ("v1.2.3", "1.2.3"),
        ("01.02.003", "1.2.3"),  # CalVer-style leading zeros (Masterminds v3.4 coerces them)
        ("1.2.3-rc.1", "1.2.3-rc.1"),
        ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
        ("3.19-alpine", "3.19.0-alpine"),  # a variant tag is a prerelease to semver
        ("1.2.3-01", None),  # numeric prerelease identifiers may not have leading zeros
        ("V1.2.3", None),  # only a lower-case v
        ("1.2.3.4", None),
        ("latest", None),
        ("18446744073709551616", None),  # above uint64
        ("18446744073709551615", "18446744073709551615.0.0"),
    ],
)
def test_parse_version(text: str, expected: str | None) -> None:
    version = parse_version(text)
    assert (str(version) if version else None) == expected


# Constraint checks, as Masterminds/semver v3 documents and tests them (README and constraints tests).
SEMVER_CASES = [
    ("=2.0.0", "1.2.3", False), ("=2.0.0", "2.0.0", True), ("=2.0", "2.0.1", True), ("4.1", "4.1.0", True),
    ("!=4.1.0", "4.1.0", False), ("!=4.1.0", "4.1.1", True), ("!=4.1", "4.1.1", False), ("!=4.1", "5.1.0", True),
    ("!=4.1-alpha", "4.1.0", True), ("!=4.1", "5.1.0-alpha.1", False),
    ("<11", "0.1.0", True), ("<11", "11.1.0", False), ("<1.1", "1.1.1", False),
    ("<=11", "11.2.3", True), ("<=11", "12.2.3", False), ("<=1.1", "1.1.1", True), ("<=1.1", "1.2.3", False),
    (">5.0", "4.1.0", False), (">4.1", "4.1.1", False), (">4.1", "4.2.0", True), (">0", "0.1.0-alpha", False),
    ("*", "1.2.3", True), ("*", "1.2.3-alpha", False),
    ("^1.2.3", "1.8.9", True), ("^1.2.3", "2.8.9", False), ("^1.2.3", "1.2.1", False), ("^1.2", "1.8.9", True),
    ("^1.2.0", "1.2.1-alpha.1", False), ("^1.2.0-alpha.0", "1.2.1-alpha.1", True),
    ("^0.2.3", "0.2.5", True), ("^0.2.3", "0.5.6", False), ("^0.0.3", "0.0.3", True), ("^0.0.3", "0.0.4", False),
    ("^0.0", "0.0.3", True), ("^0.0", "0.1.4", False), ("^0", "0.2.3", True), ("^0", "1.1.4", False),
    ("~1.2.3", "1.2.4", True), ("~1.2.3", "1.3.4", False), ("~1.2", "1.2.4", True), ("~1", "1.2.4", True),
    ("~1", "2.3.4", False), ("~1.2.3-beta.2", "1.2.3-beta.4", True), ("~1.2.3-beta.2", "1.3.4-beta.2", False),
    ("1.x", "1.2.3", True), ("1.x", "2.0.0", False), ("1.2.x", "1.2.9", True), ("1.2.x", "1.3.0", False),
    ("<=2.x", "2.9.0", True), ("<=2.x", "3.0.0", False), (">2.x", "3.0.0", True), (">2.x", "2.9.0", False),
    (">=1.2 <2", "1.9.9", True), (">=1.2 <2", "2.0.0", False), (">=1.1, <2", "1.5", True),
    ("1.1 - 2", "2.1.0", True), ("1.1 - 2", "3.0.0", False), ("1.2 - 1.4.5", "1.4.5", True),
    (">=1.2 <2 || >=3", "3.5", True), (">=1.2 <2 || >=3", "2.5", False),
    ("v1.2.x", "v1.2.9", True), ("=> 1.2", "1.3", True), ("~>1.2", "1.2.7", True),
    # prereleases: only when the AND group names one (v3.4: one constraint of the group suffices)
    (">=1.3.0", "1.3.0-rc.1", False), (">=1.3.0-0", "1.3.0-rc.1", True), (">1.0.0-beta.1 <2", "1.5.0-rc.1", True),
    (">=1.0 || >=2.0.0-0", "2.1.0-rc.1", True), (">=1.0 || >=3.0.0-0", "2.1.0-rc.1", False),
]  # fmt: skip


@pytest.mark.parametrize(("constraint", "version", "expected"), SEMVER_CASES)
def test_semver_constraints(constraint: str, version: str, expected: bool) -> None:
    parsed = parse_version(version)
    assert parsed is not None
    assert parse_semver_range(constraint).check(parsed) is expected


def test_include_prerelease_opt_in() -> None:
    rng = parse_semver_range(">=1.0")
    rc = parse_version("1.1.0-rc.1")
    assert rc is not None
    assert not rng.check(rc)
    assert rng.check(rc, include_prerelease=True)


@pytest.mark.parametrize(
    "text",
    ["", " ", ">=", "==1", ">=1.2<2", "1,,2", ",1", "1,", "||", "1 ||", "latest", "1.2x", ">= >=1", "1.2.3.4"],
)
def test_bad_ranges_are_rejected(text: str) -> None:
    with pytest.raises(UsageError, match="invalid semver range"):
        parse_semver_range(text)
    with pytest.raises(UsageError, match="invalid semver range"):
        TagSelection(semver=text)


@pytest.mark.parametrize("text", [">= 1.2", "=> 1", "~>1.2", "1.2.3 - 2.3.4", "*", "x", " >=1 , <2 ", "^1.2.3+b"])
def test_good_ranges_parse(text: str) -> None:
    assert str(parse_semver_range(text)) == text


def test_semver_selection_like_skopeo() -> None:
    tags = ["1.0.0", "v1.1", "1.2.0-rc.1", "2.0.0", "latest", "1.5-alpine", "0.9"]
    assert select_tags(tags, TagSelection(semver=">=1.0 <2")) == ["1.0.0", "v1.1"]
    assert select_tags(tags, TagSelection(semver="^1.0.0-0")) == ["1.0.0", "1.2.0-rc.1", "1.5-alpine", "v1.1"]
    assert select_tags(tags, TagSelection(semver=">=1", include_prerelease=True)) == [
        "1.0.0", "1.2.0-rc.1", "1.5-alpine", "2.0.0", "v1.1",
    ]  # fmt: skip


# --------------------------------------------------------------------------- latest N


def test_latest_n_by_semver() -> None:
    tags = ["1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1", "latest", "1.10.0-rc.2", "0.1"]
    assert select_tags(tags, TagSelection(latest=2)) == ["1.10.0", "1.9.0"]
    # a range that names a prerelease lets it compete
    assert select_tags(tags, TagSelection(semver=">=1.0.0-0", latest=2)) == ["1.10.0", "2.0.0-rc.1"]
    assert select_tags(tags, TagSelection(latest=2, include_prerelease=True)) == ["1.10.0", "2.0.0-rc.1"]
    # combined with include: only matching tags compete; exact tags are added on top
    sel = TagSelection(include=(r"1\.\d+\.0",), latest=1, exact=("latest",))
    assert select_tags(tags, sel) == ["1.10.0", "latest"]
    assert select_tags(tags, TagSelection(latest=100)) == ["0.1", "1.10.0", "1.2.0", "1.9.0"]


def test_latest_ties_are_deterministic() -> None:
    tags = ["v1.2.0", "1.2", "1.2.0", "1.1"]
    for _ in range(20):
        random.shuffle(tags)
        assert select_tags(tags, TagSelection(latest=1)) == ["1.2"]
        assert select_tags(tags, TagSelection(latest=2)) == ["1.2", "1.2.0"]


# --------------------------------------------------------------------------- properties

TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True) | st.from_regex(
    r"v?[0-9]{1,2}(\.[0-9]{1,2}){0,2}(-(rc|beta)\.[1-9])?", fullmatch=True
)


@settings(max_examples=200, deadline=None)
@given(
    tags=st.lists(TAG, max_size=30),
    include=st.sampled_from([(), (r"v?\d+\.\d+\.\d+",), (r".*",)]),
    semver=st.sampled_from([None, ">=1", "^1.2 || ~0.3", "<10.0.0-0"]),
    latest=st.sampled_from([None, 1, 3]),
    exclude=st.sampled_from([(), (r".*rc.*",)]),
    seed=st.integers(0, 10**6),
)
def test_selection_properties(
    tags: list[str],
    include: tuple[str, ...],
    semver: str | None,
    latest: int | None,
    exclude: tuple[str, ...],
    seed: int,
) -> None:
    sel = TagSelection(include=include, semver=semver, latest=latest, exclude=exclude)
    chosen = select_tags(tags, sel)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= set(tags)
    assert not any(is_signature_tag(t) for t in chosen)
    assert all(sel.excluded_by(t) is None for t in chosen)
    if latest is not None:
        assert len(chosen) <= latest
    shuffled = list(tags)
    random.Random(seed).shuffle(shuffled)
    assert select_tags(shuffled, sel) == chosen  # independent of the registry's listing order


@settings(max_examples=200, deadline=None)
@given(
    a=st.sampled_from([">=1.2", "^0.3", "~2.1.0", "1.x", "<1.0.0-0", "!=1.5"]),
    b=st.sampled_from([">=3", "2.x", "~0.3.1", "=1.2.3", ">1.0.0-rc.1 <1.1"]),
    version=st.from_regex(r"[0-3]\.[0-5]\.[0-3](-rc\.[1-3])?", fullmatch=True),
)
def test_or_is_any_of_the_branches(a: str, b: str, version: str) -> None:
    v = parse_version(version)
    assert v is not None
    either = parse_semver_range(f"{a} || {b}").check(v)
    assert either == (parse_semver_range(a).check(v) or parse_semver_range(b).check(v))
