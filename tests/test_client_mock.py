"""Registry client behaviour a real distribution registry cannot be made to show.

Each test serves answers from ``httpx.MockTransport``: distribution 2.8 ignores
``n`` on tag lists, has no referrers API, never answers 429, never redirects
blob GETs to another host and never truncates a body on purpose.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import anyio
import httpx
import pytest

from regtool.errors import DigestMismatch, ManifestError
from regtool.manifest import OCI_INDEX, OCI_MANIFEST, Descriptor
from regtool.reference import parse_reference
from regtool.registry import (
    ClientOptions,
    RegistryClient,
    RegistryError,
    RegistryOptions,
    RetryPolicy,
    RetryWaitExceeded,
)
from regtool.registry.credentials import Credential

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **opts: object) -> RegistryClient:
    options = ClientOptions(
        default=RegistryOptions(**opts),  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05, max_wait=5),
        transport=httpx.MockTransport(handler),
    )
    return RegistryClient(options)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(fn: Callable[[], object]) -> object:
    return anyio.run(fn)  # type: ignore[arg-type]


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(b"{}"), "size": 2},
        "layers": [],
    }
).encode()


def test_tag_pagination_follows_link_headers_mock_because_distribution_ignores_n() -> None:
    pages = {
        None: (["a", "b"], '</v2/r/tags/list?n=2&last=b>; rel="next"'),
        "b": (["c", "d"], '</v2/r/tags/list?n=2&last=d>; rel="next"'),
        "d": (["e"], None),
    }
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(str(req.url))
        last = req.url.params.get("last")
        tags, link = pages[last]
        headers = {"Link": link} if link else {}
        return httpx.Response(200, json={"name": "r", "tags": tags}, headers=headers)

    async def main() -> list[str]:
        async with client_for(handler) as c:
            return await c.list_tags(parse_reference("reg.example/r"), page_size=2)

    assert run(main) == ["a", "b", "c", "d", "e"]
    assert "n=2" in seen[0] and "last=d" in seen[2]


def test_endless_pagination_is_refused() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"tags": ["x"]}, headers={"Link": '</v2/r/tags/list?last=x>; rel="next"'}
        )

    async def main() -> None:
        async with client_for(handler) as c:
            await c.list_tags(parse_reference("reg.example/r"))

    with pytest.raises(RegistryError, match="loops back"):
        run(main)


def test_referrers_api_answers_are_used_mock_because_distribution_28_lacks_the_api() -> None:
    subject = sha(MANIFEST)
    art = {"mediaType": OCI_MANIFEST, "digest": sha(b"x"), "size": 1, "artifactType": "application/x-sbom"}
    other = {"mediaType": OCI_MANIFEST, "digest": sha(b"y"), "size": 1, "artifactType": "application/x-sig"}

    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == f"/v2/r/referrers/{subject}"
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [art, other]}
        return httpx.Response(200, json=body, headers={"Content-Type": OCI_INDEX})

    async def main() -> list[Descriptor]:
        async with client_for(handler) as c:
            return await c.referrers(
                parse_reference("reg.example/r"), subject, artifact_type="application/x-sbom"
            )

    found = run(main)
    assert [d.digest for d in found] == [art["digest"]]  # type: ignore[union-attr]


def test_referrers_fall_back_to_the_digest_tag_when_the_api_is_missing() -> None:
    subject = sha(MANIFEST)
    art = {"mediaType": OCI_MANIFEST, "digest": sha(b"x"), "size": 1, "artifactType": "application/x-sbom"}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [art]}).encode()
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.path)
        if "/referrers/" in req.url.path:
            return httpx.Response(404, text="404 page not found")
        assert req.url.path == "/v2/r/manifests/" + subject.replace(":", "-")
        return httpx.Response(200, content=index, headers={"Content-Type": OCI_INDEX})

    async def main() -> tuple[list[Descriptor], list[Descriptor]]:
        async with client_for(handler) as c:
            ref = parse_reference("reg.example/r")
            return await c.referrers(ref, subject), await c.referrers(ref, subject)

    first, second = run(main)  # type: ignore[misc]
    assert [d.digest for d in first] == [art["digest"]]
    assert second == first
    # the missing API is remembered: the second lookup goes straight to the tag
    assert sum("/referrers/" in p for p in calls) == 1


def test_429_with_retry_after_is_waited_out() -> None:
    calls: list[float] = []

    def handler(req: httpx.Request) -> httpx.Response:
        import time

        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(
                429, headers={"Retry-After": "1"}, json={"errors": [{"code": "TOOMANYREQUESTS"}]}
            )
        return httpx.Response(200, json={"tags": ["t"]})

    async def main() -> list[str]:
        async with client_for(handler) as c:
            return await c.list_tags(parse_reference("reg.example/r"))

    assert run(main) == ["t"]
    assert calls[1] - calls[0] >= 0.95


def test_retry_after_beyond_max_wait_fails_with_a_clear_message() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "3600"})

    async def main() -> None:
        async with client_for(handler) as c:
            await c.list_tags(parse_reference("reg.example/r"))

    with pytest.raises(RetryWaitExceeded, match="max-retry-wait"):
        run(main)


def test_server_errors_are_retried_then_surface() -> None:
    count = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(503)

    async def main() -> None:
        async with client_for(handler) as c:
            await c.list_tags(parse_reference("reg.example/r"))

    with pytest.raises(RegistryError, match="503"):
        run(main)
    assert count == 4


def test_no_retry_on_404_or_401() -> None:
    count = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(
            404, json={"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]}
        )

    async def main() -> None:
        async with client_for(handler) as c:
            await c.list_tags(parse_reference("reg.example/r"))

    with pytest.raises(RegistryError, match="repository name not known") as info:
        run(main)
    assert info.value.exit_code == 2
    assert count == 1


def test_redirect_to_another_host_drops_authorization() -> None:
    blob = b"layer bytes" * 100
    seen: dict[str, str | None] = {}

    def handler(req: httpx.Request) -> httpx.Response:
        seen[req.url.host] = req.headers.get("authorization")
        if req.url.host == "reg.example":
            return httpx.Response(307, headers={"Location": "https://objects.example/blob?sig=abc"})
        return httpx.Response(200, content=blob)

    async def main() -> bytes:
        async with client_for(handler, credential=Credential(registry_token="sekrit")) as c:
            desc = Descriptor(media_type="application/octet-stream", digest=sha(blob), size=len(blob))
            return b"".join([chunk async for chunk in c.open_blob(parse_reference("reg.example/r"), desc)])

    assert run(main) == blob
    assert seen["reg.example"] == "Bearer sekrit"
    assert seen["objects.example"] is None


class _Truncating(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        yield self.data
        raise httpx.ReadError("connection reset by peer")


def test_truncated_blob_download_resumes_with_range() -> None:
    blob = bytes(range(256)) * 4096
    ranges: list[str | None] = []

    def handler(req: httpx.Request) -> httpx.Response:
        rng = req.headers.get("range")
        ranges.append(rng)
        if rng is None:
            return httpx.Response(200, stream=_Truncating(blob[: len(blob) // 3]))
        start = int(rng.split("=")[1].rstrip("-"))
        return httpx.Response(206, content=blob[start:])

    async def main() -> bytes:
        async with client_for(handler) as c:
            desc = Descriptor(media_type="application/octet-stream", digest=sha(blob), size=len(blob))
            return b"".join([chunk async for chunk in c.open_blob(parse_reference("reg.example/r"), desc)])

    assert run(main) == blob
    assert ranges == [None, f"bytes={len(blob) // 3}-"]


def test_blob_digest_mismatch_is_refused_and_names_host_and_digest() -> None:
    blob = b"the real bytes"

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"evil bytes!!!!")

    async def main() -> list[bytes]:
        async with client_for(handler) as c:
            desc = Descriptor(media_type="application/octet-stream", digest=sha(blob), size=len(blob))
            return [chunk async for chunk in c.open_blob(parse_reference("reg.example/r"), desc)]

    with pytest.raises(DigestMismatch, match=r"sha256:[0-9a-f]{64} from reg.example") as info:
        run(main)
    assert sha(blob) in str(info.value)


def test_manifest_digest_mismatch_is_refused() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_MANIFEST})

    async def main() -> None:
        async with client_for(handler) as c:
            await c.get_manifest(parse_reference("reg.example/r@" + sha(b"other")))

    with pytest.raises(DigestMismatch, match="reg.example"):
        run(main)


def test_manifest_media_type_disagreeing_with_content_type_is_refused_cve_2021_41190() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=MANIFEST, headers={"Content-Type": OCI_INDEX})

    async def main() -> None:
        async with client_for(handler) as c:
            await c.get_manifest(parse_reference("reg.example/r:1"))

    with pytest.raises(ManifestError):
        run(main)


def test_oversized_manifest_is_refused() -> None:
    big = b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}"

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=big, headers={"Content-Type": OCI_MANIFEST})

    async def main() -> None:
        async with client_for(handler) as c:
            await c.get_manifest(parse_reference("reg.example/r:1"))

    with pytest.raises(ManifestError, match="limit"):
        run(main)


def test_upload_location_state_query_is_kept_intact() -> None:
    blob = b"some blob"
    state = "_state=abc%2Bdef%3D%3D&x=1"
    puts: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": f"/v2/r/blobs/uploads/uuid?{state}"})
        if req.method == "PUT":
            puts.append(str(req.url))
            return httpx.Response(201)
        raise AssertionError(req.method)

    async def opener(offset: int):  # type: ignore[no-untyped-def]
        yield blob[offset:]

    async def main() -> str:
        async with client_for(handler) as c:
            desc = Descriptor(media_type="application/octet-stream", digest=sha(blob), size=len(blob))
            return await c.upload_blob(parse_reference("reg.example/r"), desc, opener)

    assert run(main) == "uploaded"
    assert puts[0].startswith(f"https://reg.example/v2/r/blobs/uploads/uuid?{state}&digest=sha256%3A")


def test_chunked_upload_resumes_from_the_servers_range() -> None:
    blob = bytes(range(256)) * 40_000  # over one 8 MiB chunk, so a second PATCH exists to fail
    received = bytearray()
    failed = False

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal failed
        if req.method == "POST":
            return httpx.Response(202, headers={"Location": "/up/1", "OCI-Chunk-Min-Length": "10000"})
        if req.method == "PATCH":
            start, end = (int(x) for x in req.headers["content-range"].split("-"))
            assert start == len(received)
            if start > 0 and not failed:
                failed = True
                return httpx.Response(502)
            received.extend(req.content)
            return httpx.Response(202, headers={"Location": "/up/1", "Range": f"0-{len(received) - 1}"})
        if req.method == "GET":
            return httpx.Response(204, headers={"Location": "/up/1", "Range": f"0-{len(received) - 1}"})
        if req.method == "PUT":
            assert sha(bytes(received)) == req.url.params["digest"]
            return httpx.Response(201)
        raise AssertionError(req.method)

    async def opener(offset: int):  # type: ignore[no-untyped-def]
        for i in range(offset, len(blob), 1 << 20):
            yield blob[i : i + (1 << 20)]

    async def main() -> str:
        async with client_for(handler) as c:
            desc = Descriptor(media_type="application/octet-stream", digest=sha(blob), size=len(blob))
            return await c.upload_blob(parse_reference("reg.example/r"), desc, opener)

    assert run(main) == "uploaded"
    assert bytes(received) == blob and failed
