"""Manifests, digests and platforms, checked against skopeo wherever skopeo has an opinion."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regtool import manifest as m
from regtool.errors import InvalidReference, ManifestError, NotFound, UsageError
from regtool.manifest import (
    ACCEPT_MANIFESTS,
    DOCKER_LIST,
    DOCKER_V2S1,
    DOCKER_V2S1_SIGNED,
    DOCKER_V2S2,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Platform,
    PlatformNotFound,
    detect_media_type,
    is_nondistributable,
    manifest_digest,
    parse_manifest,
    select_platform,
    sha256_digest,
    validate_digest,
)

FIXTURES = Path(__file__).parent / "fixtures" / "manifests"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.json"))
SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed (scripts/test installs it)")

D = "sha256:" + "a" * 64

# fixture -> (media type, number of layers or children, config media type)
VALID = {
    "ociv1.encrypted.manifest.json": (OCI_MANIFEST, 3, m.OCI_CONFIG),
    "ociv1.everything.json": (OCI_MANIFEST, 1, "application/our-artifact-config"),
    "ociv1.image.index.json": (OCI_INDEX, 2, None),
    "ociv1.manifest.json": (OCI_MANIFEST, 3, m.OCI_CONFIG),
    "ociv1.nondistributable.gzip.manifest.json": (OCI_MANIFEST, 1, m.OCI_CONFIG),
    "ociv1.nondistributable.manifest.json": (OCI_MANIFEST, 1, m.OCI_CONFIG),
    "ociv1.nondistributable.zstd.manifest.json": (OCI_MANIFEST, 1, m.OCI_CONFIG),
    "ociv1.uncompressed.manifest.json": (OCI_MANIFEST, 3, m.OCI_CONFIG),
    "ociv1.zstd.manifest.json": (OCI_MANIFEST, 3, m.OCI_CONFIG),
    "ociv1nomime.image.index.json": (OCI_INDEX, 2, None),
    "ociv1nomime.manifest.json": (OCI_MANIFEST, 3, m.OCI_CONFIG),
    "schema2-to-schema1-by-docker.json": (DOCKER_V2S1_SIGNED, 15, None),
    "v2list.manifest.json": (DOCKER_LIST, 5, None),
    "v2s1-unsigned.manifest.json": (DOCKER_V2S1, 3, None),
    "v2s1.everything.json": (DOCKER_V2S1, 1, None),
    "v2s1.manifest.json": (DOCKER_V2S1_SIGNED, 3, None),
    "v2s2.everything.json": (DOCKER_V2S2, 1, m.DOCKER_CONFIG),
    "v2s2.manifest.json": (DOCKER_V2S2, 3, m.DOCKER_CONFIG),
    "v2s2.nondistributable.gzip.manifest.json": (DOCKER_V2S2, 1, m.OCI_CONFIG),
    "v2s2.nondistributable.manifest.json": (DOCKER_V2S2, 1, m.OCI_CONFIG),
    "v2s2.uncompressed.manifest.json": (DOCKER_V2S2, 3, m.DOCKER_CONFIG),
    "v2s2nomime.manifest.json": (DOCKER_V2S2, 0, m.DOCKER_CONFIG),
}

# fixture -> part of the error message
INVALID = {
    "non-json.manifest.json": "is not valid JSON",
    "unknown-version.manifest.json": "unsupported manifest schemaVersion 99999",
    "ociv1.invalid.mediatype.manifest.json": '"application/vnd.oci.image.layer.v1.tar+unknown"',
    "v2s1-invalid-signatures.manifest.json": "cannot compute the digest",
    # The config descriptor's digest is "": invalid per the OCI spec, and unfetchable.
    "ociv1.artifact.json": 'invalid config: invalid digest ""',
    "ociv1nomime.artifact.json": 'invalid config: invalid digest ""',
}


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_is_classified() -> None:
    assert sorted([*VALID, *INVALID]) == ALL_FIXTURES


def skopeo_digest(path: Path) -> str | None:
    """`skopeo manifest-digest`, or None where skopeo fails."""
    assert SKOPEO is not None
    result = subprocess.run([SKOPEO, "manifest-digest", str(path)], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() if result.returncode == 0 else None


def our_digest(data: bytes) -> str | None:
    try:
        return manifest_digest(data)
    except ManifestError as exc:
        assert "\n" not in str(exc)
        return None


# --- parsing fixtures ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_fixture_parses(name: str) -> None:
    media_type, count, config_type = VALID[name]
    data = read(name)
    manifest = parse_manifest(data)
    assert manifest.media_type == media_type
    assert manifest.raw == data
    assert manifest.digest == manifest_digest(data)
    assert manifest.json == json.loads(data)
    assert manifest.is_index == (media_type in (OCI_INDEX, DOCKER_LIST))
    assert len(manifest.children() if manifest.is_index else manifest.layers) == count
    assert (manifest.config.media_type if manifest.config else None) == config_type
    assert manifest.schema_version == (1 if manifest.is_schema1 else 2)
    # A registry's Content-Type header agreeing with the body changes nothing.
    assert parse_manifest(data, media_type + "; charset=utf-8") == manifest
    assert parse_manifest(data, "application/json") == manifest
    assert detect_media_type(data, None) == media_type


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_refused(name: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(read(name))
    assert INVALID[name] in str(info.value)
    assert "\n" not in str(info.value)


def test_fixture_details() -> None:
    everything = parse_manifest(read("ociv1.everything.json"))
    assert everything.artifact_type == "application/our-artifact"
    assert everything.annotations == {"top": "0"}
    assert everything.config is not None and everything.config.urls == ("https://some.example/config",)
    assert everything.config.data == "YQ=="
    subject = everything.subject
    assert subject is not None and subject.artifact_type == "application/our-subject"
    assert subject.platform == Platform("b", "a", "e", "c", ("d",))
    assert Descriptor.from_json(subject.to_json()) == subject
    layer = everything.layers[0]
    assert layer.annotations == {"layer": "2"} and layer.size == 2

    index = parse_manifest(read("ociv1.image.index.json"))
    amd64 = index.children()[1]
    assert amd64.platform == Platform("linux", "amd64", os_features=("sse4",))
    assert index.annotations["com.example.key1"] == "value1"
    assert index.config is None and index.layers == []

    schema1 = parse_manifest(read("schema2-to-schema1-by-docker.json"))
    fs_layers = json.loads(read("schema2-to-schema1-by-docker.json"))["fsLayers"]
    assert [layer.digest for layer in schema1.layers] == [entry["blobSum"] for entry in reversed(fs_layers)]
    assert {layer.size for layer in schema1.layers} == {-1}
    assert schema1.config is None and schema1.children() == []

    signed, unsigned = parse_manifest(read("v2s1.manifest.json")), parse_manifest(read("v2s1-unsigned.manifest.json"))
    assert signed.digest == unsigned.digest  # the signature is not part of the digest

    v2s2 = parse_manifest(read("v2s2.manifest.json"))
    assert v2s2.descriptor() == Descriptor(DOCKER_V2S2, v2s2.digest, len(v2s2.raw))
    assert v2s2.descriptor().digest == sha256_digest(v2s2.raw)


def test_nondistributable() -> None:
    for name in (
        "ociv1.nondistributable.manifest.json",
        "ociv1.nondistributable.gzip.manifest.json",
        "ociv1.nondistributable.zstd.manifest.json",
        "v2s2.nondistributable.manifest.json",
        "v2s2.nondistributable.gzip.manifest.json",
    ):
        assert all(is_nondistributable(layer.media_type) for layer in parse_manifest(read(name)).layers)
    for name in ("ociv1.manifest.json", "v2s2.manifest.json", "ociv1.encrypted.manifest.json"):
        assert not any(is_nondistributable(layer.media_type) for layer in parse_manifest(read(name)).layers)


# --- manifest_digest parity with skopeo ----------------------------------------------------------------


@needs_skopeo
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_digest_matches_skopeo(name: str) -> None:
    assert our_digest(read(name)) == skopeo_digest(FIXTURES / name)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


BODY = (
    b'{\n   "schemaVersion": 1,\n   "name": "a/b",\n   "tag": "t",\n   "architecture": "amd64",\n'
    b'   "fsLayers": [],\n   "history": []'
)
FL = len(BODY)


def protected(length: object, tail: bytes, extra: str = "") -> str:
    return b64(f'{{"formatLength":{length},"formatTail":"{b64(tail)}"{extra}}}'.encode())


def signed(signatures: str, body: bytes = BODY) -> bytes:
    return body + b',\n   "signatures": ' + signatures.encode() + b"\n}"


def fill(template: str, *values: object) -> str:
    """Put values into the "@@" holes of a JSON template (braces make str.format awkward here)."""
    for value in values:
        template = template.replace("@@", str(value), 1)
    return template


def raw_protected(header: str) -> str:
    return fill('[{"protected":"@@"}]', b64(header.encode()))


GOOD = fill('[{"header":{"alg":"ES256"},"signature":"x","protected":"@@"}]', protected(FL, b"\n}"))


def _with_top(extra: bytes) -> bytes:
    return BODY.replace(b'"schemaVersion": 1', extra)


# Each exercises a corner of how containers/image decodes signed schema1 manifests (Go's encoding/json
# quirks and libtrust's rules); the expected outcome is whatever skopeo says.
CRAFTED: dict[str, bytes] = {
    "good": signed(GOOD),
    "empty-signature-list": signed("[]"),
    "null-signatures": signed("null"),
    "object-signatures": signed("{}"),
    "null-signature": signed("[null]"),
    "length-is-string": signed(raw_protected('{"formatLength":"5","formatTail":"Cn0"}')),
    "length-zero": signed(fill('[{"protected":"@@"}]', protected(0, b""))),
    "length-past-end": signed(fill('[{"protected":"@@"}]', protected(10**6, b""))),
    "length-negative": signed(fill('[{"protected":"@@"}]', protected(-1, b"\n}"))),
    "length-fraction": signed(fill('[{"protected":"@@"}]', protected(FL + 0.7, b"\n}"))),
    "length-exponent": signed(fill('[{"protected":"@@"}]', protected(f"{FL}e0", b"\n}"))),
    "length-overflow": signed(fill('[{"protected":"@@"}]', protected("1e400", b"\n}"))),
    "length-huge": signed(fill('[{"protected":"@@"}]', protected("1e300", b"\n}"))),
    "zero-then-length": signed(
        fill('[{"protected":"@@"},{"protected":"@@"}]', protected(0, b""), protected(FL, b"\n}"))
    ),
    "length-then-zero": signed(
        fill('[{"protected":"@@"},{"protected":"@@"}]', protected(FL, b"\n}"), protected(0, b""))
    ),
    "conflicting-length": signed(
        fill('[{"protected":"@@"},{"protected":"@@"}]', protected(FL, b"\n}"), protected(FL - 1, b"\n}"))
    ),
    "conflicting-tail": signed(
        fill('[{"protected":"@@"},{"protected":"@@"}]', protected(FL, b"\n}"), protected(FL, b"}"))
    ),
    "header-number-overflow": signed(fill('[{"protected":"@@"}]', protected(FL, b"\n}", ',"x":1e999'))),
    "duplicate-length": signed(raw_protected(fill('{"formatLength":3,"formatLength":@@,"formatTail":"Cn0"}', FL))),
    "tail-not-base64": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"!!"}', FL))),
    "tail-padded": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"Cn0="}', FL))),
    "tail-over-padded": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"Cn0=="}', FL))),
    "tail-trailing-bits": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"Cn1"}', FL))),
    "tail-newline": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"C\\nn0"}', FL))),
    "tail-carriage-return": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"C\\rn0"}', FL))),
    "tail-cr-in-padding": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"Cn0\\r="}', FL))),
    "tail-space": signed(raw_protected(fill('{"formatLength":@@,"formatTail":"C n0"}', FL))),
    "tail-null": signed(raw_protected(fill('{"formatLength":@@,"formatTail":null}', FL))),
    "protected-padded": signed(fill('[{"protected":"@@="}]', protected(FL, b"\n}"))),
    "protected-null": signed(raw_protected("null")),
    "protected-array": signed(raw_protected("[]")),
    "protected-key-case": signed(fill('[{"protected":"x","Protected":"@@"}]', protected(FL, b"\n}"))),
    "protected-then-null": signed(fill('[{"protected":"@@","protected":null}]', protected(FL, b"\n}"))),
    "alg-number": signed(fill('[{"header":{"alg":5},"protected":"@@"}]', protected(FL, b"\n}"))),
    "header-string": signed(fill('[{"header":"x","protected":"@@"}]', protected(FL, b"\n}"))),
    "x5c-null-entry": signed(fill('[{"header":{"x5c":[null,"a"]},"protected":"@@"}]', protected(FL, b"\n}"))),
    "x5c-number": signed(fill('[{"header":{"x5c":[1]},"protected":"@@"}]', protected(FL, b"\n}"))),
    "jwk-overflow": signed(fill('[{"header":{"jwk":1e999},"protected":"@@"}]', protected(FL, b"\n}"))),
    "signature-number": signed(fill('[{"signature":1,"protected":"@@"}]', protected(FL, b"\n}"))),
    "signatures-overflow": signed(fill('[{"protected":"@@", "zz": 1e999}]', protected(FL, b"\n}"))),
    "Signatures-key": BODY + b',\n   "Signatures": ' + GOOD.encode() + b"\n}",
    "long-s-key": BODY + ',\n   "\u017fignatures": '.encode() + GOOD.encode() + b"\n}",
    "duplicate-signatures": BODY + b',"signatures":' + GOOD.encode() + b',"signatures":[]}',
    "signatures-then-null": BODY + b',"signatures":' + GOOD.encode() + b',"Signatures":null}',
    "version-float": signed(GOOD, _with_top(b'"schemaVersion": 1.0')),
    "version-string": signed(GOOD, _with_top(b'"schemaVersion": "1"')),
    "version-key-case": signed(GOOD, BODY.replace(b'"schemaVersion"', b'"SCHEMAVERSION"')),
    "version-then-null": signed(GOOD, _with_top(b'"schemaVersion": 1, "schemaversion": null')),
    "version-minus-zero": signed(GOOD, _with_top(b'"schemaVersion": -0')),
    "media-type-oci": signed(GOOD, _with_top(b'"schemaVersion": 1, "mediaType": "' + OCI_MANIFEST.encode() + b'"')),
    "media-type-number": signed(GOOD, _with_top(b'"schemaVersion": 1, "mediaType": 5')),
    "media-type-other": signed(GOOD, _with_top(b'"schemaVersion": 1, "mediaType": "x"')),
    "huge-numbers-elsewhere": signed(GOOD, _with_top(b'"schemaVersion": 1, "x": 1e999, "y": 1' + b"0" * 5000)),
    "byte-order-mark": b"\xef\xbb\xbf" + signed(GOOD),
    "nan": signed(GOOD, _with_top(b'"schemaVersion": 1, "x": NaN')),
    "invalid-utf8-in-string": signed(GOOD, BODY.replace(b'"a/b"', b'"a\xff/b"')),
    "lone-surrogate": signed(GOOD, BODY.replace(b'"a/b"', b'"a\\ud800/b"')),
    "trailing-garbage": signed(GOOD) + b" x",
    "deep-nesting": signed(GOOD, _with_top(b'"schemaVersion": 1, "x": ' + b"[" * 500 + b"]" * 500)),
    "top-level-null": b"null",
    "top-level-array": b"[]",
    "empty": b"",
}


@needs_skopeo
def test_crafted_digests_match_skopeo(tmp_path: Path) -> None:
    paths = []
    for name, data in CRAFTED.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        theirs = list(pool.map(skopeo_digest, paths))
    ours = [our_digest(data) for data in CRAFTED.values()]
    mismatches = [(name, t, o) for name, t, o in zip(CRAFTED, theirs, ours, strict=True) if t != o]
    assert not mismatches
    # The table must exercise both outcomes, and stripping must actually happen.
    assert theirs.count(None) > 10 and len(set(theirs)) > 20
    assert ours[0] == sha256_digest(BODY + b"\n}")


def _random_signed_manifest(rng: random.Random) -> bytes:
    """A signed schema1 manifest with randomly broken pieces."""

    def number() -> str:
        return rng.choice([str(FL), str(FL - 2), "0", "-1", f"{FL}.5", "1e999", f"{FL}e0", '"3"', "null"])

    def tail() -> str:
        return rng.choice(['"Cn0"', '"Cn0="', '"fQ"', '""', "null", "1", '"C n0"', '"Cn0\\n"', '"!!"'])

    def header() -> str:
        keys = [f'"{rng.choice(["formatLength", "formatlength"])}":{number()}', f'"formatTail":{tail()}']
        if rng.random() < 0.3:
            keys.append('"time":"2016"')
        rng.shuffle(keys)
        return "{" + ",".join(keys) + "}"

    def block() -> str:
        prot = b64(header().encode()) + rng.choice(["", "", "=", "A", "\\n"])
        parts = [f'"{rng.choice(["protected", "Protected", "PROTECTED"])}":"{prot}"']
        if rng.random() < 0.5:
            parts.append('"header":' + rng.choice(["{}", "null", '{"alg":1}', '{"jwk":{}}', "[]"]))
        if rng.random() < 0.3:
            parts.append('"signature":' + rng.choice(['"x"', "1", "null"]))
        return "{" + ",".join(parts) + "}"

    signatures = "[" + ",".join(block() for _ in range(rng.randint(0, 3))) + "]"
    if rng.random() < 0.1:
        signatures = rng.choice(["null", "{}", "1", '"x"'])
    key = rng.choice(["signatures"] * 6 + ["Signatures", "signatureS"])
    version = rng.choice(["1"] * 8 + ["1.0", '"1"', "2"])
    body = BODY.replace(b'"schemaVersion": 1', f'"schemaVersion": {version}'.encode())
    return body + f',\n   "{key}": {signatures}\n}}'.encode()


@needs_skopeo
def test_random_signed_manifests_match_skopeo(tmp_path: Path) -> None:
    rng = random.Random(41190)
    cases = [_random_signed_manifest(rng) for _ in range(150)]
    paths = []
    for i, data in enumerate(cases):
        path = tmp_path / f"{i}.json"
        path.write_bytes(data)
        paths.append(path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        theirs = list(pool.map(skopeo_digest, paths))
    mismatches = [(data, t, o) for data, t in zip(cases, theirs, strict=True) if t != (o := our_digest(data))]
    assert not mismatches
    stripped = sum(1 for data, t in zip(cases, theirs, strict=True) if t not in (None, sha256_digest(data)))
    assert stripped > 5 and theirs.count(None) > 5


def test_signed_schema1_digest_is_the_payload() -> None:
    data = signed(GOOD)
    assert manifest_digest(data) == sha256_digest(BODY + b"\n}")
    assert manifest_digest(data) != sha256_digest(data)
    parsed = parse_manifest(data)
    assert parsed.media_type == DOCKER_V2S1_SIGNED
    assert parsed.digest == sha256_digest(BODY + b"\n}")


# --- detection and the CVE-2021-41190 rules ------------------------------------------------------------

IMAGE = {
    "schemaVersion": 2,
    "mediaType": OCI_MANIFEST,
    "config": {"mediaType": m.OCI_CONFIG, "digest": D, "size": 2},
    "layers": [{"mediaType": m.OCI_LAYER_GZIP, "digest": D, "size": 3}],
}
INDEX = {
    "schemaVersion": 2,
    "mediaType": OCI_INDEX,
    "manifests": [{"mediaType": OCI_MANIFEST, "digest": D, "size": 4}],
}


def dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def test_content_type_mismatch_is_refused() -> None:
    with pytest.raises(ManifestError, match="CVE-2021-41190") as info:
        parse_manifest(dump(IMAGE), OCI_INDEX)
    assert OCI_MANIFEST in str(info.value) and OCI_INDEX in str(info.value)
    with pytest.raises(ManifestError, match="mismatch"):
        parse_manifest(dump(INDEX), DOCKER_LIST)
    with pytest.raises(ManifestError, match="mismatch"):
        parse_manifest(dump({**IMAGE, "mediaType": DOCKER_V2S2}), OCI_MANIFEST)


def test_content_type_fills_in_a_missing_media_type() -> None:
    assert parse_manifest(dump(without(IMAGE, "mediaType")), DOCKER_V2S2).media_type == DOCKER_V2S2
    assert parse_manifest(dump(without(IMAGE, "mediaType"))).media_type == OCI_MANIFEST
    for generic in ("application/json", "text/plain", "application/octet-stream", "", None):
        assert parse_manifest(dump(IMAGE), generic).media_type == OCI_MANIFEST
        assert parse_manifest(dump(without(INDEX, "mediaType")), generic).media_type == OCI_INDEX
    # A header naming one kind does not make a body of another kind pass as it.
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(dump(without(IMAGE, "mediaType")), OCI_INDEX)
    with pytest.raises(ManifestError, match="ambiguous"):
        parse_manifest(dump(without(INDEX, "mediaType")), OCI_MANIFEST)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({**IMAGE, "manifests": INDEX["manifests"]}, "ambiguous"),
        ({**INDEX, "config": IMAGE["config"]}, "ambiguous"),
        ({**INDEX, "layers": IMAGE["layers"]}, "ambiguous"),
        ({**without(IMAGE, "mediaType"), "manifests": []}, "ambiguous"),
        ({**IMAGE, "fsLayers": []}, "ambiguous"),
        ({**IMAGE, "MediaType": OCI_INDEX}, '"MediaType"'),
        ({**IMAGE, "Manifests": []}, '"Manifests"'),
        ({**IMAGE, "mediaType": "application/vnd.example+json"}, "unsupported manifest media type"),
        ({**IMAGE, "mediaType": 3}, "must be a string"),
        ({**IMAGE, "mediaType": DOCKER_V2S1}, "schemaVersion 2 but"),
        ({**IMAGE, "schemaVersion": 1}, "schemaVersion 1 but"),
        (without(IMAGE, "schemaVersion"), "no schemaVersion"),
        ({**IMAGE, "schemaVersion": True}, "schemaVersion"),
        ({**IMAGE, "schemaVersion": "2"}, "schemaVersion"),
        ({**IMAGE, "schemaVersion": 3}, "unsupported manifest schemaVersion 3"),
        ({"schemaVersion": 2}, "cannot tell what kind"),
        (without(IMAGE, "config"), "needs a config"),
        ({**INDEX, "manifests": None}, "needs a manifests list"),
        ({**IMAGE, "layers": {}}, "layers must be a list"),
        ({**IMAGE, "annotations": {"a": 1}}, "annotations"),
        ({**IMAGE, "artifactType": 1}, "artifactType"),
        ({**IMAGE, "subject": {"mediaType": OCI_MANIFEST, "digest": "sha256:x", "size": 1}}, "subject"),
        (
            {
                **IMAGE,
                "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.xz", "digest": D, "size": 1}],
            },
            "unsupported Docker layer media type",
        ),
        ({"schemaVersion": 1, "fsLayers": [{"blobSum": "md5"}], "history": [{}]}, "blobSum"),
        ({"schemaVersion": 1, "fsLayers": [{"blobSum": D}], "history": []}, "history"),
        ({"schemaVersion": 1, "fsLayers": {}}, "fsLayers"),
        ({"schemaVersion": 1, "fsLayers": [], "name": 5}, "name"),
    ],
)
def test_bad_manifests(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(dump(doc))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_json_level_refusals() -> None:
    cases = {
        b"": "not valid JSON",
        b"{": "not valid JSON",
        b"\xff\xfe{}": "not UTF-8",
        b"\xef\xbb\xbf{}": "not valid JSON",
        b'{"schemaVersion": NaN}': "not valid JSON",
        b"[1]": "not a JSON object",
        b'{"schemaVersion": 2, "schemaVersion": 2}': 'duplicate key "schemaVersion"',
        b'{"a": {"x": 1, "x": 2}}': "duplicate key",
        b"[" * 100000: "not valid JSON",
    }
    for data, message in cases.items():
        with pytest.raises(ManifestError) as info:
            parse_manifest(data)
        assert message in str(info.value), (data[:20], str(info.value))


def test_oversized_manifest() -> None:
    padding = " " * (MAX_MANIFEST_SIZE + 1 - len(dump(IMAGE)))
    data = dump(IMAGE)[:-1] + padding.encode() + b"}"
    assert len(data) == MAX_MANIFEST_SIZE + 1
    with pytest.raises(ManifestError, match="limit"):
        parse_manifest(data)
    with pytest.raises(ManifestError, match="limit"):
        detect_media_type(data, None)
    parse_manifest(data[:-2] + b"}")  # exactly at the limit is fine


def test_unknown_media_types_are_fine_outside_reserved_namespaces() -> None:
    doc = {
        **IMAGE,
        "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": m.OCI_EMPTY, "digest": D, "size": 2, "data": "e30="},
        "layers": [{"mediaType": "application/spdx+json", "digest": D, "size": 1, "x-extension": [1]}],
    }
    parsed = parse_manifest(dump(doc))
    assert parsed.artifact_type == "application/vnd.example.sbom"
    assert parsed.layers[0].media_type == "application/spdx+json"
    for layer_type in (m.OCI_LAYER_ZSTD + "+encrypted", m.OCI_LAYER_NONDISTRIBUTABLE, m.DOCKER_FOREIGN_LAYER_GZIP):
        parse_manifest(dump({**IMAGE, "layers": [{"mediaType": layer_type, "digest": D, "size": 1}]}))


# --- descriptors and digests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"digest": "sha256:abc"}, "64 lowercase hex"),
        ({"digest": "sha256:" + "A" * 64}, "64 lowercase hex"),
        ({"digest": 5}, "not a string"),
        ({"digest": None}, "not a string"),
        ({"size": -1}, "size -1"),
        ({"size": True}, "size true"),
        ({"size": 1.5}, "size 1.5"),
        ({"size": "1"}, 'size "1"'),
        ({"size": 2**53 + 1}, "2**53"),
        ({"mediaType": None}, "mediaType null"),
        ({"mediaType": "nonsense"}, 'mediaType "nonsense"'),
        ({"urls": "http://x"}, "urls"),
        ({"urls": [1]}, "urls"),
        ({"platform": {"os": "linux"}}, "os and architecture"),
        ({"platform": {"os": "linux", "architecture": "amd64", "os.features": "x"}}, "os.features"),
        ({"platform": []}, "not a JSON object"),
        ({"Digest": D}, '"Digest"'),
        ({"data": 1}, "data"),
    ],
)
def test_descriptor_validation(patch: dict[str, Any], message: str) -> None:
    doc = {"mediaType": OCI_MANIFEST, "digest": D, "size": 1, **patch}
    with pytest.raises(ManifestError) as info:
        Descriptor.from_json(doc, "manifests[0]")
    assert message in str(info.value)
    assert "manifests[0]" in str(info.value)


def test_descriptor_round_trip() -> None:
    doc = {
        "mediaType": OCI_MANIFEST,
        "digest": D,
        "size": 2**53,
        "urls": ["https://x"],
        "annotations": {"k": "v"},
        "data": "YQ==",
        "platform": {"architecture": "arm", "os": "linux", "os.version": "1", "os.features": ["f"], "variant": "v7"},
        "artifactType": "application/x",
    }
    desc = Descriptor.from_json(doc)
    assert desc.to_json() == doc
    assert list(desc.to_json()) == list(doc)
    assert hash(desc) == hash(Descriptor.from_json(doc))
    minimal = Descriptor(m.OCI_LAYER, D, 0)
    assert minimal.to_json() == {"mediaType": m.OCI_LAYER, "digest": D, "size": 0}
    with pytest.raises(ManifestError):
        Descriptor(m.OCI_LAYER, "bad", 0)
    with pytest.raises(ManifestError):
        Descriptor(m.OCI_LAYER, D, -2)


def test_validate_digest() -> None:
    good = [D, "sha512:" + "0" * 128, "sha384:" + "0" * 96, "blake3:" + "A" * 10, "a.b+c_d-e:x=_-"]
    for digest in good:
        assert validate_digest(digest) == digest
    bad = [
        "",
        "sha256",
        "sha256:",
        ":abc",
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 65,
        "sha512:" + "a" * 64,
        "sha256:" + "g" * 64,
        "a..b:x",
        "sha256:a b",
        "sha256:" + "a" * 64 + "\n",
    ]
    for digest in bad:
        with pytest.raises(InvalidReference) as info:
            validate_digest(digest)
        # Bad syntax is a usage error on the command line and a manifest error inside a manifest.
        assert isinstance(info.value, ManifestError)
        assert "\n" not in str(info.value)
    assert sha256_digest(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_accept_list() -> None:
    assert set(ACCEPT_MANIFESTS) == m.MANIFEST_MEDIA_TYPES
    assert m.COSIGN_SIMPLESIGNING == "application/vnd.dev.cosign.simplesigning.v1+json"


# --- robustness properties ----------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.sampled_from([1, 2, 2, 3, "2", None]),
        "mediaType": st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_V2S2, DOCKER_LIST, DOCKER_V2S1, "x", 1]),
        "config": _json_values | st.just({"mediaType": m.OCI_CONFIG, "digest": D, "size": 1}),
        "layers": _json_values | st.just([{"mediaType": m.OCI_LAYER, "digest": D, "size": 1}]),
        "manifests": _json_values | st.just([{"mediaType": OCI_MANIFEST, "digest": D, "size": 1}]),
        "fsLayers": _json_values | st.just([{"blobSum": D}]),
        "history": _json_values,
        "signatures": _json_values,
        "subject": _json_values,
        "annotations": _json_values,
    },
)
_content_types = st.none() | st.sampled_from([*ACCEPT_MANIFESTS, "application/json", "text/plain; x=y"])


def _only_manifest_errors(data: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_manifest(data, content_type)
    except ManifestError as exc:
        assert "\n" not in str(exc)
    else:
        assert parsed.digest == manifest_digest(data)
    try:
        manifest_digest(data)
    except ManifestError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300)
@given(st.binary(max_size=200), _content_types)
def test_random_bytes_raise_only_manifest_error(data: bytes, content_type: str | None) -> None:
    _only_manifest_errors(data, content_type)


@settings(max_examples=300)
@given(_json_values | _manifest_like, _content_types)
def test_random_json_raises_only_manifest_error(doc: Any, content_type: str | None) -> None:
    _only_manifest_errors(json.dumps(doc).encode(), content_type)


# --- platforms ----------------------------------------------------------------------------------------


def test_platform_parse() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert Platform.parse("linux/amd64") == Platform("linux", "amd64")
    assert Platform.parse("Linux/x86_64") == Platform("linux", "amd64")
    assert Platform.parse("linux/armhf") == Platform("linux", "arm", "v7")
    assert Platform.parse("linux/aarch64") == Platform("linux", "arm64")
    assert str(Platform.parse("linux/arm/v6")) == "linux/arm/v6"
    for text in ("linux", "linux/", "/amd64", "linux/amd64/v1/x", "linux/am d64", ""):
        with pytest.raises(UsageError, match="expected os/arch"):
            Platform.parse(text)


@pytest.mark.parametrize(
    ("machine", "arch", "variant"),
    [
        ("x86_64", "amd64", None),
        ("AMD64", "amd64", None),
        ("aarch64", "arm64", "v8"),
        ("arm64", "arm64", "v8"),
        ("armv7l", "arm", "v7"),
        ("armv6l", "arm", "v6"),
        ("i686", "386", None),
        ("ppc64le", "ppc64le", None),
        ("s390x", "s390x", None),
        ("riscv64", "riscv64", None),
    ],
)
def test_platform_host(monkeypatch: pytest.MonkeyPatch, machine: str, arch: str, variant: str | None) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    monkeypatch.setattr(sys, "platform", "linux")
    assert Platform.host() == Platform("linux", arch, variant)


def test_platform_host_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "armv7l")
    monkeypatch.setattr(sys, "platform", "darwin")
    assert Platform.host() == Platform("linux", "arm", "v7")  # macOS runs Linux images
    # An explicit architecture is not combined with the host's variant.
    assert Platform.host(arch="arm64") == Platform("linux", "arm64")
    assert Platform.host(arch="arm", variant="v6") == Platform("linux", "arm", "v6")
    assert Platform.host(variant="v5") == Platform("linux", "arm", "v5")
    assert Platform.host(os="windows", arch="amd64") == Platform("windows", "amd64")
    monkeypatch.setattr(sys, "platform", "win32")
    assert Platform.host().os == "windows"


def test_platform_matches() -> None:
    want = Platform("linux", "arm", "v7")
    assert want.variants() == ("v7", "v6", "v5", "")
    assert want.matches(Platform("linux", "arm", "v6"))
    assert not want.matches(Platform("linux", "arm", "v8"))
    assert not want.matches(Platform("windows", "arm", "v7"))
    assert Platform("linux", "arm64").variants() == ("", "v8")
    assert Platform("linux", "arm64", "v8").variants() == ("v8", "")
    assert Platform("linux", "arm64").matches(Platform("linux", "arm64", "v8"))
    assert Platform("linux", "amd64").variants() == ("",)
    assert Platform("linux", "amd64", "v3").variants() == ("v3", "")
    assert not Platform("linux", "amd64").matches(Platform("linux", "amd64", "v3"))


def index_of(*platforms: dict[str, Any] | None, media_type: str = OCI_INDEX) -> m.Manifest:
    children = []
    for i, platform in enumerate(platforms):
        child: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": f"sha256:{i:064x}", "size": 1}
        if platform is not None:
            child["platform"] = platform
        children.append(child)
    return parse_manifest(dump({"schemaVersion": 2, "mediaType": media_type, "manifests": children}))


def plat(text: str) -> dict[str, Any]:
    parts = text.split("/")
    out: dict[str, Any] = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def chosen(index: m.Manifest, want: str) -> int:
    return int(select_platform(index, Platform.parse(want)).digest.split(":")[1], 16)


def test_select_platform() -> None:
    index = index_of(
        None,
        plat("linux/amd64"),
        plat("linux/arm/v5"),
        plat("linux/arm/v6"),
        plat("linux/arm/v7"),
        plat("linux/arm64/v8"),
        plat("windows/amd64"),
        plat("unknown/unknown"),
    )
    assert chosen(index, "linux/amd64") == 1
    assert chosen(index, "windows/amd64") == 6
    assert chosen(index, "linux/arm/v7") == 4
    assert chosen(index, "linux/arm/v6") == 3
    assert chosen(index, "linux/arm64") == 5  # empty variant accepts v8
    assert chosen(index, "linux/arm64/v8") == 5

    fallback = index_of(plat("linux/arm/v5"), plat("linux/arm/v6"), plat("linux/arm64"))
    assert chosen(fallback, "linux/arm/v7") == 1  # v7 falls back to v6 before v5
    assert chosen(fallback, "linux/arm64/v8") == 2  # v8 accepts no variant
    assert chosen(index_of(plat("linux/arm"), plat("linux/arm/v5")), "linux/arm/v7") == 1  # v5 before ""
    exact = index_of(plat("linux/arm64"), plat("linux/arm64/v8"))
    assert chosen(exact, "linux/arm64/v8") == 1
    assert chosen(exact, "linux/arm64") == 0

    docker = parse_manifest(read("v2list.manifest.json"))
    assert select_platform(docker, Platform("linux", "amd64")).digest.startswith("sha256:ae1b0e06")


def test_select_platform_errors() -> None:
    index = index_of(plat("linux/amd64"), plat("linux/arm/v7"), plat("linux/amd64"), None)
    with pytest.raises(PlatformNotFound) as info:
        select_platform(index, Platform.parse("linux/arm/v6"))
    message = str(info.value)
    assert message == ("no image found in image index for platform linux/arm/v6 (available: linux/amd64, linux/arm/v7)")
    assert isinstance(info.value, ManifestError) and isinstance(info.value, NotFound)
    with pytest.raises(PlatformNotFound, match="manifest list .*none listed"):
        select_platform(index_of(None, media_type=DOCKER_LIST), Platform.parse("linux/amd64"))
    with pytest.raises(ManifestError, match="not an index"):
        select_platform(parse_manifest(dump(IMAGE)), Platform.parse("linux/amd64"))
