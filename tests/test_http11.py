"""regtool's HTTP/1.1 transport against raw TCP servers that answer exactly what a test scripts.

The registries of the test bed exercise the ordinary paths (every copy and sync test runs over
this transport); these tests cover what a real registry will not do on demand: chunked bodies
with trailers, bodies cut short, stale kept-alive connections, early answers to uploads, bad
heads, slow servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from regtool.registry.http11 import Http11Transport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    return lines[0], headers, body


class Server:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


async def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Http11Transport(), timeout=httpx.Timeout(5.0))


def test_keep_alive_reuses_one_connection_and_reads_bodies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line, _, _ = await _read_request(reader)
            body = line.split(b" ")[1]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            for i in range(5):
                r = await client.get(f"{server.url}/path/{i}?q=1")
                assert r.status_code == 200
                assert r.content == f"/path/{i}?q=1".encode()
            head = await client.head(f"{server.url}/x")
            assert head.content == b"" and head.headers["content-length"] == "2"
            assert server.connections == 1

    run(main())


def test_chunked_body_with_extensions_and_trailers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"
        )
        await writer.drain()
        await _read_request(reader)  # the connection stays usable after a chunked body
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            r = await client.get(server.url + "/")
            assert r.content == b"hello world"
            assert (await client.get(server.url + "/")).status_code == 204
            assert server.connections == 1

    run(main())


def test_body_until_close_without_length() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 300_000)
        await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            assert (await client.get(server.url + "/")).content == b"x" * 300_000
            assert (await client.get(server.url + "/")).content == b"x" * 300_000
            assert server.connections == 2  # a body delimited by close is never followed by reuse

    run(main())


def test_stale_kept_alive_connection_is_replaced_for_a_replayable_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # The server then closes this connection without saying so (an idle timeout).

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            assert (await client.get(server.url + "/")).content == b"ok"
            await asyncio.sleep(0.05)
            assert (await client.put(server.url + "/", content=b"data")).content == b"ok"
            assert server.connections == 2

    run(main())


def test_streamed_upload_and_early_answer() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers, body = await _read_request(reader)
        received.append(body)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        # Second request: answer 413 after the head, then close as Go's net/http does (half-close,
        # drain what is still coming, close), which is how distribution refuses an upload early.
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        await writer.drain()
        writer.write_eof()
        while await reader.read(65536):
            pass

    async def pieces(n: int) -> AsyncIterator[bytes]:
        for i in range(n):
            yield bytes([65 + i % 26]) * 65536
            await asyncio.sleep(0)

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            r = await client.put(server.url + "/u", content=pieces(8))  # no length: sent chunked
            assert r.status_code == 201
            assert received[0] == b"".join([bytes([65 + i]) * 65536 for i in range(8)])
            big = str(64 * 65536)
            r = await client.put(server.url + "/u", content=pieces(64), headers={"Content-Length": big})
            assert r.status_code == 413 and r.content == b"nope"
            assert (await client.put(server.url + "/u", content=b"x")).status_code == 201
            assert server.connections == 2  # not reused after Connection: close

    run(main())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", "complete message body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "complete message body"),
        (b"HTTP/1.1 2OO OK\r\n\r\n", "status line"),
        (b"SPDY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\n bad: fold\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunked"),
    ],
    ids=["cut-length", "cut-chunked", "status", "protocol", "folded", "two-lengths", "negative-length", "chunk-size"],
)
def test_bad_answers_are_protocol_errors(answer: bytes, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await client.get(server.url + "/")

    run(main())


def test_endless_head_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2000):
            writer.write(b"X-Filler: " + b"a" * 1000 + b"\r\n")
            await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            with pytest.raises(httpx.RemoteProtocolError, match="too large"):
                await client.get(server.url + "/")

    run(main())


def test_interim_100_continue_is_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
        await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            assert (await client.get(server.url + "/")).content == b"z"

    run(main())


def test_read_timeout_and_refused_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async def main() -> None:
        async with Server(handler) as server:
            async with httpx.AsyncClient(transport=Http11Transport(), timeout=httpx.Timeout(0.3)) as client:
                with pytest.raises(httpx.ReadTimeout):
                    await client.get(server.url + "/")
            url = server.url
        async with await _client() as client:
            with pytest.raises(httpx.ConnectError, match="refused"):
                await client.get(url + "/")

    run(main())


def test_unread_body_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"y" * 1_000_000)
            await writer.drain()

    async def main() -> None:
        async with Server(handler) as server, await _client() as client:
            async with client.stream("GET", server.url + "/") as r:
                async for _ in r.aiter_bytes():
                    break  # leave the rest unread: the connection cannot carry another answer
            r2 = await client.get(server.url + "/")
            assert r2.content == b"y" * 1_000_000
            assert server.connections == 2

    run(main())
