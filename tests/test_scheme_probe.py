"""``--tls-verify=false``: the HTTPS-or-HTTP question, and the plain request sent while it is out.

A relay in front of a real registry records what each connection sends first and holds back the
answer to the first connection (regtool's HTTPS probe) until a plain-text request has arrived on
another one (or 10 s have passed). Code that waited for the probe before sending anything would
therefore show no plain request while the probe was held.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from regtool.reference import Reference
from regtool.registry import ClientOptions, RegistryClient, RegistryOptions
from regtool.registry.credentials import Credential
from tests.support.images import push_oci_image
from tests.support.registries import Registry

HOLD = 10.0


class Relay:
    """TCP relay to ``target``; ``first_bytes`` per connection; ``plain_while_held`` as described above."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.first_bytes: list[bytes] = []
        self.plain_seen = asyncio.Event()
        self.plain_while_held = False
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def netloc(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.first_bytes)
        self.first_bytes.append(b"")
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def upstream() -> None:
            while data := await reader.read(65536):
                if not self.first_bytes[index]:
                    self.first_bytes[index] = data
                    if data[:5] in (b"GET /", b"HEAD "):
                        self.plain_seen.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.write_eof()

        async def downstream() -> None:
            first = True
            while data := await up_reader.read(65536):
                if first and index == 0:  # the probe's answer waits for a plain request elsewhere
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.plain_seen.wait(), HOLD)
                    self.plain_while_held = self.plain_seen.is_set()
                first = False
                writer.write(data)
                await writer.drain()
            writer.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(upstream(), downstream())
        writer.close()
        up_writer.close()

    def plain_requests(self) -> list[bytes]:
        return [b for b in self.first_bytes if b[:5] in (b"GET /", b"HEAD ")]


def _client(credential: Credential | None = None) -> RegistryClient:
    return RegistryClient(ClientOptions(default=RegistryOptions(tls_verify=False, credential=credential)))


def test_plain_registry_answers_the_first_request_while_the_probe_is_out(registry_plain: Registry, repo: str) -> None:
    digest = push_oci_image(registry_plain, repo, "v1").digest

    async def main() -> None:
        async with Relay(registry_plain.host) as relay, _client() as client:
            head = await client.head_manifest(Reference(relay.netloc, repo, tag="v1"))
            assert head is not None and head.digest == digest
            assert relay.first_bytes[0][:1] == b"\x16"  # a TLS ClientHello: the probe went first
            assert relay.plain_while_held  # and the HEAD went out before the probe was answered
            assert client.requests["HEAD"] == 1  # the plain answer was used, not asked again

    anyio.run(main)


def test_tls_registry_gets_no_credentials_in_plain_text(registry_basic: Registry, repo: str) -> None:
    """Against an HTTPS registry the plain attempt is dropped; credentials only ever go over TLS."""
    digest = push_oci_image(registry_basic, repo, "v1").digest
    assert registry_basic.username and registry_basic.password
    credential = Credential(username=registry_basic.username, password=registry_basic.password)

    async def main() -> None:
        async with Relay(registry_basic.host) as relay, _client(credential) as client:
            ref = Reference(relay.netloc, repo, tag="v1")
            head = await client.head_manifest(ref)
            assert head is not None and head.digest == digest
            assert await client.list_tags(ref) == ["v1"]
            plain = relay.plain_requests()
            assert plain, relay.first_bytes  # the plain attempt was made (and answered 400 by TLS)
            assert all(b"authorization" not in p.lower() for p in plain), plain
            assert registry_basic.password is not None
            assert all(registry_basic.password.encode() not in p for p in plain)

    anyio.run(main)
