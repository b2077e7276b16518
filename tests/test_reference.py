"""Reference parsing: the distribution/reference grammar, Docker normalisation and transports.

Where skopeo is installed the tables are also checked against it: `skopeo standalone-verify` parses its
reference argument with containers/image's ParseNormalizedNamed before touching any signature, which
makes it an offline oracle for "is this a valid reference".
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regtool.errors import InvalidReference, UsageError
from regtool.reference import (
    DEFAULT_REGISTRY,
    DOCKER_HUB_API_HOST,
    ImageRef,
    Reference,
    parse_image,
    parse_reference,
    parse_repository,
)

D64 = "sha256:" + "0123456789abcdef" * 4
D512 = "sha512:" + "0123456789abcdef" * 8

# input -> (registry, repository, tag, digest)
NORMALISED = [
    ("alpine", ("docker.io", "library/alpine", None, None)),
    ("alpine:3", ("docker.io", "library/alpine", "3", None)),
    ("library/alpine", ("docker.io", "library/alpine", None, None)),
    ("docker.io/alpine", ("docker.io", "library/alpine", None, None)),
    ("docker.io/library/alpine:latest", ("docker.io", "library/alpine", "latest", None)),
    ("index.docker.io/alpine", ("docker.io", "library/alpine", None, None)),
    ("index.docker.io/foo/bar", ("docker.io", "foo/bar", None, None)),
    ("registry-1.docker.io/foo", ("registry-1.docker.io", "foo", None, None)),
    ("foo/bar", ("docker.io", "foo/bar", None, None)),
    ("foo/bar/baz:1.0", ("docker.io", "foo/bar/baz", "1.0", None)),
    ("localhost/foo", ("localhost", "foo", None, None)),
    ("localhost:5000/foo/bar:tag", ("localhost:5000", "foo/bar", "tag", None)),
    ("localhost:5000", ("docker.io", "library/localhost", "5000", None)),
    ("foo:5000", ("docker.io", "library/foo", "5000", None)),
    ("127.0.0.1:5000/a", ("127.0.0.1:5000", "a", None, None)),
    ("Example.COM/foo", ("Example.COM", "foo", None, None)),
    ("foo.com:443/bar", ("foo.com:443", "bar", None, None)),
    ("ghcr.io/org/app@" + D64, ("ghcr.io", "org/app", None, D64)),
    ("example.com/a:tag@" + D64, ("example.com", "a", "tag", D64)),
    ("alpine@" + D512, ("docker.io", "library/alpine", None, D512)),
    ("[::1]:5000/foo", ("[::1]:5000", "foo", None, None)),
    ("[2001:db8::1]/foo", ("[2001:db8::1]", "foo", None, None)),
    ("a.b-c.example/x__y/z.w-v---u:T_a.g-", ("a.b-c.example", "x__y/z.w-v---u", "T_a.g-", None)),
    ("a" * 65, ("docker.io", "library/" + "a" * 65, None, None)),
    ("sub.example.com/a/b/c/d/e", ("sub.example.com", "a/b/c/d/e", None, None)),
    ("foo@md5:" + "0" * 32, ("docker.io", "library/foo", None, "md5:" + "0" * 32)),
]

INVALID = [
    "",
    ":",
    "@",
    "/",
    "alpine:",
    "alpine@",
    "Alpine",
    "foo/Bar",
    "Foo/bar",
    "-foo",
    "foo-",
    "foo..bar",
    "foo//bar",
    "foo/",
    "/foo",
    "foo:-tag",
    "foo:.tag",
    "foo:" + "a" * 129,
    "foo@sha256:abc",
    "foo@sha256:" + "A" * 64,
    "foo@sha256:" + "0" * 63,
    "foo@sha512:" + "0" * 64,
    "foo@sha256:" + "0" * 64 + "@x",
    "foo@1sha:" + "0" * 32,
    "foo bar",
    "foo\n",
    "ünïcode",
    "localhost:abc/foo",
    "[fe80::1%eth0]/foo",
    "foo_bar.com/x",
    "a" * 64,
    "0123456789abcdef" * 4,
    "docker://alpine",
    "example.com/" + "a" * 244,
    "a" * 238,
    "foo:bar:baz",
]


@pytest.mark.parametrize(("text", "want"), NORMALISED)
def test_normalisation(text: str, want: tuple[str, str, str | None, str | None]) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == want
    assert parse_reference(str(ref)) == ref  # the fully qualified form round-trips
    assert parse_reference(ref.familiar) == ref


@pytest.mark.parametrize("text", INVALID)
def test_invalid(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid reference ")


def test_error_messages_quote_the_offending_part() -> None:
    cases = {
        "foo:-tag": 'invalid tag "-tag"',
        "foo@sha256:abc": 'invalid digest "sha256:abc"',
        "foo/Bar": 'repository name "foo/Bar" must be lowercase',
        "foo/a..b": 'invalid repository name component "a..b"',
        "localhost:abc/foo": 'invalid registry host "localhost:abc"',
        "docker://alpine": '"docker://" does not belong here',
        "a" * 64: "image ID",
    }
    for text, part in cases.items():
        with pytest.raises(InvalidReference) as info:
            parse_reference(text)
        assert part in str(info.value), (text, str(info.value))


def test_length_limits() -> None:
    assert parse_reference("example.com/" + "a" * 243).name == "example.com/" + "a" * 243  # 255 in all
    with pytest.raises(InvalidReference, match="255"):
        parse_reference("example.com/" + "a" * 244)
    parse_reference("a" * (255 - len("docker.io/library/")))
    with pytest.raises(InvalidReference, match="255"):
        parse_reference("a" * (256 - len("docker.io/library/")))
    assert parse_reference("foo:" + "a" * 128).tag == "a" * 128


def test_reference_properties() -> None:
    ref = parse_reference("alpine:3.19")
    assert ref.name == "docker.io/library/alpine"
    assert str(ref) == "docker.io/library/alpine:3.19"
    assert ref.familiar == "alpine:3.19"
    assert ref.api_host == DOCKER_HUB_API_HOST
    assert ref.identifier == "3.19"
    assert ref.repo_only() == Reference(DEFAULT_REGISTRY, "library/alpine")
    assert ref.repo_only().identifier == "latest"
    pinned = ref.with_digest(D64)
    assert pinned.identifier == D64
    assert str(pinned) == f"docker.io/library/alpine:3.19@{D64}"
    assert pinned.with_tag("edge") == Reference("docker.io", "library/alpine", "edge")
    assert parse_reference("docker.io/library/foo/bar").familiar == "library/foo/bar"
    assert parse_reference("docker.io/team/app").familiar == "team/app"
    local = parse_reference("localhost:5000/team/app@" + D64)
    assert local.api_host == "localhost:5000"
    assert local.familiar == "localhost:5000/team/app@" + D64
    with pytest.raises(InvalidReference):
        ref.with_tag("bad tag")
    with pytest.raises(InvalidReference):
        ref.with_digest("sha256:nothex")


def test_constructor_normalises_and_validates() -> None:
    assert Reference("index.docker.io", "alpine") == parse_reference("alpine")
    with pytest.raises(InvalidReference):
        Reference("docker.io", "Upper")
    with pytest.raises(InvalidReference):
        Reference("bad_host", "a")
    with pytest.raises(InvalidReference):
        Reference("docker.io", "")


def test_parse_repository() -> None:
    assert parse_repository("alpine") == parse_reference("alpine")
    assert parse_repository("docker://quay.io/a/b") == Reference("quay.io", "a/b")
    for text in ("docker://alpine:3", "alpine@" + D64):
        with pytest.raises(InvalidReference, match="tag or digest not allowed"):
            parse_repository(text)
    with pytest.raises(InvalidReference, match="invalid repository name"):
        parse_repository("docker://Alpine")


# --- transports ---------------------------------------------------------------------------------------


def test_parse_image_docker() -> None:
    image = parse_image("docker://alpine")
    assert image.transport == "docker"
    assert image.reference == parse_reference("alpine")
    assert image.path is None and image.layout_ref is None
    assert str(image) == "docker://docker.io/library/alpine"
    assert parse_image(str(image)) == image
    tagged = parse_image("docker://localhost:5000/a/b:t@" + D64)
    assert tagged.reference == Reference("localhost:5000", "a/b", "t", D64)


@pytest.mark.parametrize(
    ("text", "transport", "path", "layout_ref"),
    [
        ("oci:/tmp/layout", "oci", "/tmp/layout", None),
        ("oci:/tmp/layout:", "oci", "/tmp/layout", None),
        ("oci:out:alpine:3", "oci", "out", "alpine:3"),
        ("oci:out:docker.io/library/alpine:3", "oci", "out", "docker.io/library/alpine:3"),
        ("oci:./rel dir:a--b", "oci", "./rel dir", "a--b"),
        ("oci:out:A_b@c+d", "oci", "out", "A_b@c+d"),
        ("oci-archive:/tmp/x.tar", "oci-archive", "/tmp/x.tar", None),
        ("oci-archive:x.tar:v1", "oci-archive", "x.tar", "v1"),
        ("dir:/tmp/a:b", "dir", "/tmp/a:b", None),
        ("dir:relative", "dir", "relative", None),
    ],
)
def test_parse_image_paths(text: str, transport: str, path: str, layout_ref: str | None) -> None:
    image = parse_image(text)
    assert (image.transport, image.reference, image.path, image.layout_ref) == (
        transport,
        None,
        path,
        layout_ref,
    )
    assert parse_image(str(image)) == image


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("foo", 'invalid image name "foo": missing transport (expected docker://, oci:, oci-archive:, dir:)'),
        ("bar:foo", 'invalid image name "bar:foo": unknown transport "bar" (expected docker://, oci:'),
        ("alpine:3", 'did you mean "docker://alpine:3"?'),
        ("Docker://alpine", 'unknown transport "Docker"'),
        ("docker:alpine", 'start with "docker://"'),
        ("docker://", "empty reference"),
        ("docker://Alpine", "must be lowercase"),
        ("docker://alpine:", "empty tag"),
        ("oci:", "missing path"),
        ("oci::tag", "missing path"),
        ("oci:/tmp/l:-a", 'invalid image reference "-a"'),
        ("oci:/tmp/l:a..b", 'invalid image reference "a..b"'),
        ("oci:/tmp/l:a---b", 'invalid image reference "a---b"'),
        ("oci:/tmp/l:a b", 'invalid image reference "a b"'),
        ("oci-archive:/tmp/x.tar:a/", 'invalid image reference "a/"'),
        ("dir:", "missing path"),
    ],
)
def test_parse_image_errors(text: str, part: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_image(text)
    assert part in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_image_ref_constructor_checks() -> None:
    with pytest.raises(InvalidReference):
        ImageRef("docker")
    with pytest.raises(InvalidReference):
        ImageRef("oci", reference=parse_reference("alpine"))
    with pytest.raises(InvalidReference):
        ImageRef("dir", path="x", layout_ref="y")
    assert str(ImageRef("oci", path="out", layout_ref="v1")) == "oci:out:v1"


# --- properties ---------------------------------------------------------------------------------------

_REF_ALPHABET = "abcAZ09._-/:@[]%+ \nü" + "sha256" + "f" * 8


@settings(max_examples=400)
@given(st.one_of(st.text(), st.text(alphabet=_REF_ALPHABET, max_size=80)))
def test_parse_only_raises_invalid_reference(text: str) -> None:
    for parse in (parse_reference, parse_repository):
        try:
            ref = parse(text)
        except InvalidReference as exc:
            assert "\n" not in str(exc)
        else:
            assert parse_reference(str(ref)) == ref
    for prefix in ("", "docker://", "oci:", "oci-archive:", "dir:", "docker:"):
        try:
            image = parse_image(prefix + text)
        except InvalidReference as exc:
            assert "\n" not in str(exc)
        else:
            assert parse_image(str(image)) == image


_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,6}){0,3}", fullmatch=True)
_TAG = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}", fullmatch=True)


@given(
    st.sampled_from(["", "example.com/", "localhost:5000/", "index.docker.io/"]),
    st.lists(_COMPONENT, min_size=1, max_size=4),
    st.none() | _TAG,
)
def test_grammar_generated_names_parse(domain: str, components: list[str], tag: str | None) -> None:
    if not domain and ("." in components[0] or components[0] == "localhost"):
        domain = "docker.io/"  # otherwise the first component would be read as a registry host
    text = domain + "/".join(components) + (f":{tag}" if tag is not None else "")
    ref = parse_reference(text)
    assert ref.tag == tag
    assert ref.repository.endswith("/".join(components))


# --- parity with skopeo (containers/image) -------------------------------------------------------------

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (scripts/test installs it)")


@pytest.fixture(scope="module")
def skopeo_oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    yield Oracle(tmp_path_factory.mktemp("skopeo"))


class Oracle:
    """Ask containers/image whether a reference parses, without any network or keys."""

    def __init__(self, workdir: Path) -> None:
        self.manifest = workdir / "manifest.json"
        self.manifest.write_text("{}")
        self.signature = workdir / "signature"
        self.signature.write_text("x")
        self.env = dict(os.environ, GNUPGHOME=str(workdir / "gnupg"))
        (workdir / "gnupg").mkdir(mode=0o700)

    def accepts(self, text: str) -> bool:
        assert SKOPEO is not None
        result = subprocess.run(
            [SKOPEO, "standalone-verify", str(self.manifest), text, "ABCD", str(self.signature)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        assert result.returncode != 0
        # Parsing passed if verification got as far as the (garbage) signature.
        if "No data" in result.stderr:
            return True
        assert any(word in result.stderr for word in ("reference", "repository name", "digest", "hexadecimal")), (
            result.stderr
        )
        return False

    def accepts_all(self, texts: list[str]) -> list[bool]:
        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(self.accepts, texts))


def _ours(text: str) -> Reference | InvalidReference:
    try:
        return parse_reference(text)
    except InvalidReference as exc:
        return exc


def _known_deviation(text: str, ours: Reference | InvalidReference) -> bool:
    """Where regtool deliberately differs from skopeo 1.9's containers/image fork."""
    if isinstance(ours, Reference):
        # Newer distribution/reference accepts bracketed IPv6 hosts; we accept digests of any
        # algorithm that fits the grammar (containers/image only knows sha256/384/512).
        return ours.registry.startswith("[") or (
            ours.digest is not None and ours.digest.split(":")[0] not in ("sha256", "sha384", "sha512")
        )
    # An invalid host makes containers/image re-read the whole name as a path with an empty registry.
    return "invalid registry host" in str(ours)


@needs_skopeo
def test_table_matches_skopeo(skopeo_oracle: Oracle) -> None:
    texts = [text for text, _ in NORMALISED] + INVALID
    texts = [t for t in texts if "\n" not in t and t and not t.startswith("-")]
    verdicts = skopeo_oracle.accepts_all(texts)
    for text, skopeo_ok in zip(texts, verdicts, strict=True):
        ours = _ours(text)
        if _known_deviation(text, ours):
            continue
        assert isinstance(ours, Reference) == skopeo_ok, (text, ours)


@needs_skopeo
def test_random_references_match_skopeo(skopeo_oracle: Oracle) -> None:
    rng = random.Random(20240601)
    pieces = [
        "a",
        "b",
        "z",
        "0",
        "9",
        "A",
        ".",
        "_",
        "__",
        "-",
        "--",
        "/",
        ":",
        "@",
        "localhost",
        "docker.io",
        "index.docker.io",
        "example.com",
        ":5000",
        "sha256:",
        "sha512:",
        "0" * 32,
        "f" * 64,
        "library/",
    ]
    texts = []
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        if text.startswith("-"):
            continue  # skopeo would read it as a flag
        texts.append(text)
    verdicts = skopeo_oracle.accepts_all(texts)
    mismatches = []
    for text, skopeo_ok in zip(texts, verdicts, strict=True):
        ours = _ours(text)
        if not _known_deviation(text, ours) and isinstance(ours, Reference) != skopeo_ok:
            mismatches.append((text, skopeo_ok, str(ours)))
    assert not mismatches


@needs_skopeo
@pytest.mark.parametrize("layout_ref", ["a", "A_b", "a--b", "a---b", "-a", "a..b", "a b", "a@b", "x/y:z", "a/", ":a"])
def test_layout_refs_match_skopeo(layout_ref: str, tmp_path: Path) -> None:
    assert SKOPEO is not None
    result = subprocess.run(
        [SKOPEO, "inspect", f"oci:{tmp_path}:{layout_ref}"], capture_output=True, text=True, timeout=60
    )
    skopeo_ok = "Invalid image" not in result.stderr
    try:
        parse_image(f"oci:{tmp_path}:{layout_ref}")
    except InvalidReference:
        ours_ok = False
    else:
        ours_ok = True
    assert ours_ok == skopeo_ok, result.stderr
