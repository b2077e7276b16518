"""A lean HTTP/1.1 transport for httpx, on asyncio streams.

Why not httpx's default transport: httpcore, h11, h2 and anyio's socket layer cost ~70 ms of
imports in every short run (a no-op copy is mostly start-up), and on blob bodies each 64 KiB
read goes through a cancel scope, h11's event parser and an extra copy, which made regtool
spend ~30 % more CPU than skopeo per byte. Registries, token servers and object stores all
speak HTTP/1.1 with Content-Length or chunked bodies, so a small keep-alive pool is enough.
HTTP/2 (``ClientOptions.http2``) and proxies from the environment still use httpx's own
transport (httpx mounts one per proxy), and tests inject ``httpx.MockTransport``.

Errors are httpx's: ``ConnectError``/``ConnectTimeout``, ``ReadError``/``ReadTimeout``,
``WriteError``/``WriteTimeout`` and ``RemoteProtocolError`` (e.g. a body cut short), so the
client's retry and resume logic is the same whichever transport runs.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Awaitable
from typing import TypeVar

import httpx

#: Largest piece handed on per read; the stream buffer may hold up to twice STREAM_LIMIT.
READ_SIZE = 256 << 10
STREAM_LIMIT = 1 << 20
#: A response head (status line and headers) larger than this is refused.
MAX_HEAD = 64 << 10
MAX_IDLE_PER_HOST = 32

_T = TypeVar("_T")
_Key = tuple[str, str, int]

if sys.version_info >= (3, 11):

    async def _timed(aw: Awaitable[_T], seconds: float | None) -> _T:
        if seconds is None:
            return await aw
        async with asyncio.timeout(seconds):
            return await aw

else:  # pragma: no cover - Python 3.10

    async def _timed(aw: Awaitable[_T], seconds: float | None) -> _T:
        return await asyncio.wait_for(aw, seconds)


class _Connection:
    __slots__ = ("key", "reader", "writer")

    def __init__(self, key: _Key, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """An idle connection the server has not closed (or written to) since."""
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None)

    def abort(self) -> None:
        self.writer.transport.abort()


class _StaleConnection(Exception):
    """The server closed a kept-alive connection before answering: send again on a new one."""


class Http11Transport(httpx.AsyncBaseTransport):
    """Keep-alive connections per (scheme, host, port); one request per connection at a time.

    The caller (the registry client) bounds concurrency with its own per-host limiters, so
    the pool only caps how many idle connections it keeps.
    """

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, max_idle_per_host: int = MAX_IDLE_PER_HOST
    ) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle_per_host
        self._idle: dict[_Key, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        try:
            body: bytes | None = request.content  # whole bodies can be sent again on a new connection
        except httpx.RequestNotRead:
            body = None
        head = _request_head(request)
        fresh = False
        while True:
            conn, reused = await self._acquire(key, timeouts.get("connect"), fresh)
            try:
                answer = await self._exchange(conn, request, head, body, reused, timeouts)
            except _StaleConnection:
                self._discard(conn)
                if body is None:
                    raise httpx.RemoteProtocolError("server closed the connection without answering") from None
                fresh = True
                continue
            except BaseException:
                self._discard(conn)
                raise
            break
        status, reason, headers, framing, length, keep = answer
        stream = _Body(self, conn, framing, length, keep, timeouts.get("read"))
        return httpx.Response(
            status,
            headers=headers,
            stream=stream,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason},
        )

    async def aclose(self) -> None:
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._open.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the aborted transports run their connection_lost callbacks

    # -- the pool ---------------------------------------------------------------------------------------

    async def _acquire(self, key: _Key, connect_timeout: float | None, fresh: bool) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        while idle and not fresh:
            conn = idle.pop()
            if conn.usable():
                return conn, True
            self._discard(conn)
        return await self._connect(key, connect_timeout), False

    async def _connect(self, key: _Key, timeout: float | None) -> _Connection:
        scheme, host, port = key
        context: ssl.SSLContext | None = None
        if scheme == "https":
            context = self._ssl if self._ssl is not None else ssl.create_default_context()
        try:
            reader, writer = await _timed(
                asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=STREAM_LIMIT
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except ConnectionRefusedError:
            raise httpx.ConnectError(f"connection refused by {host}:{port}") from None
        except OSError as exc:  # ssl.SSLError too: the message says what TLS found
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        writer.transport.set_write_buffer_limits(high=STREAM_LIMIT)
        conn = _Connection(key, reader, writer)
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if self._closed or len(idle) >= self._max_idle or not conn.usable():
            self._discard(conn)
        else:
            idle.append(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.abort()
        self._open.discard(conn)

    # -- one exchange -----------------------------------------------------------------------------------

    async def _exchange(
        self,
        conn: _Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        reused: bool,
        timeouts: dict[str, float | None],
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], str, int, bool]:
        writer = conn.writer
        write_timeout = timeouts.get("write")
        try:
            if body is not None:
                writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    writer.write(body)
                await _timed(writer.drain(), write_timeout)
            else:
                writer.write(head)
                await self._write_stream(writer, request, write_timeout)
        except asyncio.TimeoutError:
            raise httpx.WriteTimeout("sending the request timed out") from None
        except OSError as exc:
            if reused and body is not None:
                raise _StaleConnection from exc
            # The server may have answered early (e.g. refusing an upload) and closed: read that answer.
            try:
                status, reason, headers, framing, length, _ = await self._read_head(conn, request, 5.0)
            except (httpx.TransportError, _StaleConnection):
                raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
            return status, reason, headers, framing, length, False  # the rest of our body is still unread
        try:
            return await self._read_head(conn, request, timeouts.get("read"))
        except _StaleConnection:
            if reused:
                raise
            raise httpx.RemoteProtocolError("server closed the connection without answering") from None

    async def _write_stream(self, writer: asyncio.StreamWriter, request: httpx.Request, timeout: float | None) -> None:
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for piece in stream:
            if not piece:
                continue
            if chunked:
                writer.write(b"%x\r\n" % len(piece))
                writer.write(piece)
                writer.write(b"\r\n")
            else:
                writer.write(piece)
            await _timed(writer.drain(), timeout)
        if chunked:
            writer.write(b"0\r\n\r\n")
        await _timed(writer.drain(), timeout)

    async def _read_head(
        self, conn: _Connection, request: httpx.Request, timeout: float | None
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]], str, int, bool]:
        reader = conn.reader
        while True:
            try:
                raw = await _timed(reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.TimeoutError:
                raise httpx.ReadTimeout("waiting for the answer timed out") from None
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnection from None
                raise httpx.RemoteProtocolError("server closed the connection in the middle of its answer") from None
            except asyncio.LimitOverrunError:
                raise httpx.RemoteProtocolError("answer head too large") from None
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
            if len(raw) > MAX_HEAD:
                raise httpx.RemoteProtocolError("answer head too large")
            status, reason, headers, http10 = _parse_head(raw)
            if 100 <= status < 200 and status != 101:
                continue  # 100 Continue and other interim answers
            break
        framing, length, keep = _framing(request.method, status, headers)
        return status, reason, headers, framing, length, keep and not http10


class _Body(httpx.AsyncByteStream):
    """A response body; the connection goes back to the pool once the body was read to its end.

    An iterator object rather than an async generator: a body dropped half-read (a failed copy)
    leaves no suspended generator for asyncio to finalise later, in a task of its own.
    """

    def __init__(
        self,
        transport: Http11Transport,
        conn: _Connection,
        framing: str,
        length: int,
        keep: bool,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._conn = conn
        self._framing = framing
        self._remaining = length if framing == "length" else 0  # of the body, or of the current chunk
        self._in_chunk = False
        self._keep = keep
        self._timeout = timeout
        self._done = framing == "none"
        self._closed = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._done or self._closed:
            raise StopAsyncIteration
        try:
            piece = await self._next_piece()
        except asyncio.TimeoutError:
            raise httpx.ReadTimeout("reading the answer timed out") from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body") from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("malformed chunked body") from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        if piece is None:
            self._done = True
            raise StopAsyncIteration
        return piece

    async def _next_piece(self) -> bytes | None:
        """The next piece of the body, None at its end."""
        reader = self._conn.reader
        if self._framing == "close":
            return await _timed(reader.read(READ_SIZE), self._timeout) or None
        if not self._remaining:
            if self._framing == "length":
                return None
            if not await self._next_chunk(reader):
                return None
        piece = await _timed(reader.read(min(self._remaining, READ_SIZE)), self._timeout)
        if not piece:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body: "
                f"{self._remaining} more bytes expected"
            )
        self._remaining -= len(piece)
        return piece

    async def _next_chunk(self, reader: asyncio.StreamReader) -> bool:
        """Reads up to the next chunk's data; False after the last chunk (and its trailer)."""
        if self._in_chunk and await _timed(reader.readexactly(2), self._timeout) != b"\r\n":
            raise httpx.RemoteProtocolError("malformed chunked body")
        line = await _timed(reader.readuntil(b"\r\n"), self._timeout)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise httpx.RemoteProtocolError("malformed chunked body") from None
        if size < 0:
            raise httpx.RemoteProtocolError("malformed chunked body")
        if size == 0:
            while await _timed(reader.readuntil(b"\r\n"), self._timeout) != b"\r\n":
                pass  # trailer fields: not used
            return False
        self._remaining, self._in_chunk = size, True
        return True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._done and self._keep:
            self._transport._release(self._conn)
        else:
            self._transport._discard(self._conn)


def _request_head(request: httpx.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw]
    lines.append(b"\r\n")
    return b"".join(lines)


def _parse_head(raw: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]], bool]:
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, parts[0] == b"HTTP/1.0"


def _framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> tuple[str, int, bool]:
    """How the body is delimited (RFC 9112 section 6.3): none, length, chunked or close."""
    keep = True
    encoding: bytes | None = None
    lengths: set[bytes] = set()
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif lower == b"transfer-encoding":
            encoding = value.lower()
        elif lower == b"connection" and b"close" in value.lower():
            keep = False
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return "none", 0, keep
    if encoding is not None:
        if encoding.rsplit(b",", 1)[-1].strip() == b"chunked":
            return "chunked", 0, keep and not lengths
        return "close", 0, False
    if lengths:
        if len(lengths) != 1 or not next(iter(lengths)).isdigit():
            raise httpx.RemoteProtocolError("invalid Content-Length in answer")
        length = int(next(iter(lengths)))
        return ("length", length, keep) if length else ("none", 0, keep)
    return "close", 0, False
