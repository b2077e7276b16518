"""Network tooling for tests and benchmarks: a latency proxy and a fault-injecting HTTP proxy.

Both run a private asyncio event loop in a daemon thread, so they can be used from
synchronous pytest code, from async tests running their own loop, or from a CLI
(``bench/latency_proxy.py``)::

    with LatencyProxy(target=("127.0.0.1", 5000), delay=0.025) as p:
        run_tool(f"127.0.0.1:{p.port}")

    with FaultProxy(target=("127.0.0.1", 5000), rules=[FaultRule(kind="429", retry_after=1)]) as fp:
        run_tool(fp.netloc)
        assert fp.count(method="GET") == 2

Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "FAULT_KINDS",
    "FaultKind",
    "FaultProxy",
    "FaultRule",
    "LatencyProxy",
    "RequestRecord",
    "parse_hostport",
]

_READ_SIZE = 64 * 1024
_HEAD_LIMIT = 1024 * 1024
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")

_S = TypeVar("_S", bound="_BackgroundServer")


def parse_hostport(value: str | tuple[str, int]) -> tuple[str, int]:
    """``"127.0.0.1:5000"`` / ``"[::1]:5000"`` / ``("h", 5000)`` -> ``(host, port)``."""
    if isinstance(value, tuple):
        return value[0], int(value[1])
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# Background loop plumbing shared by both proxies
# --------------------------------------------------------------------------------------------


class _BackgroundServer:
    """One listening socket served by a private event loop in a daemon thread."""

    _thread_name = "netproxy"

    def __init__(self, listen_host: str, listen_port: int) -> None:
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._connections = 0
        self._errors = 0
        self._last_error: str | None = None

    # -- public ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return self._port

    @property
    def host(self) -> str:
        return self.listen_host

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    @property
    def netloc(self) -> str:
        """``"127.0.0.1:PORT"``: what to give a client as the registry name."""
        return _netloc(self.listen_host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self: _S) -> _S:
        if self._thread is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=self._thread_name, daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._astart(), loop).result(timeout=10)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every open connection, then end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    close = stop

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- loop side ------------------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> None:
        self._server = await asyncio.start_server(
            self._on_client, self.listen_host, self._listen_port, limit=_HEAD_LIMIT
        )
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def _astop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        with self._lock:
            self._connections += 1
            conn_id = self._connections
        try:
            _nodelay(writer)
            await self._handle(reader, writer, conn_id)
        except asyncio.CancelledError:
            # only stop() cancels these; ending normally keeps asyncio's stream callback
            # from logging the cancelled task (it calls task.exception() on it, Python < 3.12)
            return
        except Exception as exc:  # one connection's failure must never take the proxy down
            with self._lock:
                self._errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
        finally:
            writer.transport.abort()
            if task is not None:
                self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> None:
        raise NotImplementedError


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0) rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# --------------------------------------------------------------------------------------------
# Latency proxy (TCP level)
# --------------------------------------------------------------------------------------------


class _Link:
    """One direction of the emulated network path, shared by every connection.

    A chunk that arrives at time ``t`` is delivered at ``t + delay`` (plus serialisation
    time when a bandwidth cap is set: chunks then queue behind each other on the link).
    """

    def __init__(self, delay: float, bandwidth: float | None) -> None:
        self.delay = delay
        self.bandwidth = bandwidth
        self._next_free = 0.0

    def due(self, arrival: float, size: int) -> float:
        if not self.bandwidth:
            return arrival + self.delay
        start = max(arrival, self._next_free)
        self._next_free = start + size / self.bandwidth
        return self._next_free + self.delay


_EOF = b""
_RESET = None


class LatencyProxy(_BackgroundServer):
    """A TCP proxy that shifts every byte in time by a one-way delay in each direction.

    Each direction is a timestamped FIFO: a reader stamps chunks on arrival and keeps
    reading, a writer releases each chunk when ``arrival + delay`` has come. A stream of
    chunks is therefore shifted in time, not slowed down, so a request/response round
    trip costs ``upstream_delay + downstream_delay`` while throughput is preserved.
    Works for anything over TCP (HTTP, TLS, ...) since it never looks at the bytes.

    ``bandwidth``: optional cap in bytes/second per direction, shared by all connections
    (like one link). ``emulate_handshake``: also hold a new connection's first bytes for
    one round trip, as the TCP handshake would have cost (off by default, so ``delay``
    is exactly what each chunk gets). ``max_buffer``: bytes in flight per direction per
    connection before the proxy stops reading (default: 16 MiB, or about two
    bandwidth-delay products when capped). Half-closes (EOF) are delayed and forwarded
    like data; a reset on one side aborts the other after the delay.
    """

    _thread_name = "latency-proxy"

    def __init__(
        self,
        target: tuple[str, int] | str,
        delay: float = 0.025,
        *,
        upstream_delay: float | None = None,
        downstream_delay: float | None = None,
        bandwidth: float | None = None,
        emulate_handshake: bool = False,
        max_buffer: int | None = None,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        super().__init__(listen_host, listen_port)
        self.target = parse_hostport(target)
        self.upstream_delay = delay if upstream_delay is None else upstream_delay
        self.downstream_delay = delay if downstream_delay is None else downstream_delay
        if self.upstream_delay < 0 or self.downstream_delay < 0:
            raise ValueError("delay must be >= 0")
        if bandwidth is not None and bandwidth <= 0:
            raise ValueError("bandwidth must be > 0 bytes/second")
        self.bandwidth = bandwidth
        self.emulate_handshake = emulate_handshake
        self._piece = 16 * 1024 if bandwidth else _READ_SIZE
        if max_buffer is None:
            if bandwidth:
                rtt = self.upstream_delay + self.downstream_delay
                max_buffer = max(256 * 1024, int(2 * bandwidth * max(rtt, 0.01)))
            else:
                max_buffer = 16 * 1024 * 1024
        self._queue_slots = max(4, max_buffer // self._piece)
        self._up = _Link(self.upstream_delay, bandwidth)
        self._down = _Link(self.downstream_delay, bandwidth)
        self._bytes: Counter[str] = Counter()
        self._active = 0

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connections": self._connections,
                "active": self._active,
                "bytes_up": self._bytes["up"],  # client -> target
                "bytes_down": self._bytes["down"],  # target -> client
                "errors": self._errors,
                "last_error": self._last_error,
            }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> None:
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        try:
            ureader, uwriter = await asyncio.open_connection(*self.target, limit=_HEAD_LIMIT)
        except OSError:
            _abort_with_rst(writer)
            return
        _nodelay(uwriter)
        with self._lock:
            self._active += 1
        up_ready = down_ready = 0.0
        if self.emulate_handshake:
            up_ready = accepted + self.upstream_delay + self.downstream_delay
            down_ready = accepted + self.upstream_delay
        try:
            await asyncio.gather(
                self._direction(reader, uwriter, writer, self._up, up_ready, "up"),
                self._direction(ureader, writer, uwriter, self._down, down_ready, "down"),
            )
        finally:
            with self._lock:
                self._active -= 1
            uwriter.transport.abort()

    async def _direction(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        src_writer: asyncio.StreamWriter,
        link: _Link,
        ready: float,
        counter: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(self._queue_slots)
        piece = self._piece

        async def produce() -> None:
            item: bytes | None = _EOF
            try:
                while True:
                    data = await src.read(_READ_SIZE)
                    if not data:
                        break
                    arrival = max(loop.time(), ready)
                    with self._lock:
                        self._bytes[counter] += len(data)
                    for i in range(0, len(data), piece):
                        part = data[i : i + piece]
                        await queue.put((link.due(arrival, len(part)), part))
            except OSError:
                item = _RESET
            await queue.put((link.due(max(loop.time(), ready), 0), item))

        async def consume() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is _RESET:
                    _abort_with_rst(dst)
                    return
                if not data:  # EOF: half-close and let the other direction finish
                    if dst.can_write_eof() and not dst.is_closing():
                        with contextlib.suppress(OSError):
                            dst.write_eof()
                    return
                if dst.is_closing():  # the other side is gone: drop this one too
                    _abort_with_rst(src_writer)
                    return
                try:
                    dst.write(data)
                    await dst.drain()
                except OSError:
                    _abort_with_rst(src_writer)
                    return

        producer = asyncio.ensure_future(produce())
        try:
            await consume()
        finally:
            if not producer.done():
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer


# --------------------------------------------------------------------------------------------
# Fault-injecting HTTP/1.1 reverse proxy
# --------------------------------------------------------------------------------------------

FaultKind = Literal["reset", "status", "429", "stall", "truncate", "slow"]
FAULT_KINDS: tuple[FaultKind, ...] = ("reset", "status", "429", "stall", "truncate", "slow")
# kinds that answer without needing the upstream response (unless forward=True)
_SYNTHETIC: frozenset[str] = frozenset({"status", "429"})


@dataclass
class FaultRule:
    """What to do to which requests.

    Matching: ``method`` (case-insensitive, None = any) and ``path_regex`` (``re.search``
    on the request target, i.e. path plus query; None = any). The first ``skip`` matching
    requests pass untouched, then the rule fires ``times`` times (None = forever).

    Kinds and the fields they use:

    - ``reset``: ``after_bytes=None`` -> the connection is reset (TCP RST) right after the
      request head is read, nothing is forwarded (with ``forward=True`` the request is
      forwarded first and the response is lost). ``after_bytes=N`` -> forwarded; the
      response head and the first N body bytes are sent, then RST.
    - ``status``: answer ``status`` (default 503; a random one of 502/503/504 when the rule
      is a template for random faults) without forwarding; a registry-style
      JSON error body; connection kept alive. ``forward=True``: forward, discard the
      real response, answer ``status`` anyway (the upstream did the work).
    - ``429``: like ``status`` with 429; ``Retry-After: <retry_after>`` if it is set.
    - ``stall``: forward, then hold the response ``seconds`` before sending anything;
      with ``after_bytes=N`` send the head and N body bytes first, then hold, then go on.
    - ``truncate``: forward; pass the response head unchanged (correct Content-Length)
      but only ``after_bytes`` body bytes (default: half the Content-Length, or 0 when
      the length is not known), then close (FIN).
    - ``slow``: forward; throttle the response body to ``bytes_per_second``.

    Body byte counts are wire bytes after the head (for chunked responses they include
    the chunk framing).
    """

    method: str | None = None
    path_regex: str | None = None
    kind: FaultKind = "status"
    times: int | None = 1
    skip: int = 0
    status: int | None = None
    retry_after: int | str | None = None
    after_bytes: int | None = None
    seconds: float = 1.0
    bytes_per_second: float = 64 * 1024
    forward: bool = False
    matched: int = field(default=0, init=False, compare=False)
    fired: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.method is not None:
            self.method = self.method.upper()
        self._regex = re.compile(self.path_regex) if self.path_regex is not None else None
        if self.bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0")

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self._regex is None or self._regex.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def resolved_status(self, rng: random.Random | None = None) -> int:
        if self.kind == "429":
            return 429
        if self.status is not None:
            return self.status
        return rng.choice((502, 503, 504)) if rng is not None else 503


@dataclass
class RequestRecord:
    """One request as the proxy saw it; ``status`` is None when no status line was sent."""

    method: str
    path: str
    connection: int
    started: float  # time.monotonic()
    status: int | None = None
    fault: str | None = None
    forwarded: bool = False
    finished: float | None = None
    request_bytes: int = 0  # body bytes (wire) received from the client
    response_bytes: int = 0  # body bytes (wire) sent to the client


class _ProtocolError(Exception):
    pass


class _Head:
    """A request or response head: start line plus headers (order and case kept)."""

    def __init__(self, start: str, headers: list[tuple[str, str]]) -> None:
        self.start = start
        self.headers = headers

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in reversed(self.headers):
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        name = name.lower()
        out: set[str] = set()
        for key, value in self.headers:
            if key.lower() == name:
                out.update(t.strip().lower() for t in value.split(",") if t.strip())
        return out

    def remove(self, name: str) -> None:
        name = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name]

    def replace(self, name: str, value: str) -> None:
        lname = name.lower()
        if any(k.lower() == lname for k, _ in self.headers):
            self.headers = [(k, value if k.lower() == lname else v) for k, v in self.headers]
        else:
            self.headers.append((name, value))

    def encode(self) -> bytes:
        lines = [self.start, *(f"{k}: {v}" for k, v in self.headers), "", ""]
        return "\r\n".join(lines).encode("latin-1")

    def framing(self) -> tuple[str, int]:
        """("chunked", 0) | ("length", n) | ("none", 0); responses may become "close" later."""
        te = self.tokens("transfer-encoding")
        if te:
            if "chunked" in te:
                return "chunked", 0
            return "close", 0
        cl = self.get("content-length")
        if cl is not None:
            try:
                n = int(cl.split(",")[0].strip())
            except ValueError:
                raise _ProtocolError(f"bad Content-Length {cl!r}") from None
            if n < 0:
                raise _ProtocolError(f"bad Content-Length {cl!r}")
            return "length", n
        return "none", 0


async def _read_head(reader: asyncio.StreamReader, prefix: bytes = b"") -> _Head | None:
    """Read one message head (after ``prefix``, bytes of it already read); None on a clean EOF."""
    try:
        raw = prefix + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not (prefix + exc.partial).strip():
            return None
        raise _ProtocolError("connection closed inside a message head") from None
    except asyncio.LimitOverrunError:
        raise _ProtocolError("message head too large") from None
    text = raw.decode("latin-1").lstrip("\r\n")
    lines = text.split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(lines[0], headers)


async def _iter_body(reader: asyncio.StreamReader, kind: str, length: int) -> AsyncGenerator[bytes, None]:
    """Yield a message body exactly as it is on the wire (chunk framing included)."""
    if kind == "length":
        remaining = length
        while remaining:
            data = await reader.read(min(remaining, _READ_SIZE))
            if not data:
                raise _ProtocolError(f"peer closed with {remaining} body bytes missing")
            remaining -= len(data)
            yield data
    elif kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ProtocolError(f"bad chunk size line {line!r}") from None
            yield line
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    yield trailer
                    if trailer == b"\r\n":
                        return
            remaining = size + 2  # data plus CRLF
            while remaining:
                data = await reader.read(min(remaining, _READ_SIZE))
                if not data:
                    raise _ProtocolError("peer closed inside a chunk")
                remaining -= len(data)
                yield data
    elif kind == "close":
        while True:
            data = await reader.read(_READ_SIZE)
            if not data:
                return
            yield data


def _request_line(req: _Head) -> tuple[str, str, str]:
    parts = req.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _ProtocolError(f"bad request line {req.start[:100]!r}")
    return parts[0].upper(), parts[1], parts[2]


_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request"
)


class _Upstream:
    """The upstream connection pinned to one client connection, (re)opened on demand."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reused = False  # whether the last connect() handed out a kept-alive connection

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.reused = True
        if self.reader is None or self.writer is None or self.writer.is_closing() or self.reader.at_eof():
            self.close()
            self.reused = False
            self.reader, self.writer = await asyncio.open_connection(*self.target, limit=_HEAD_LIMIT)
            _nodelay(self.writer)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class _Cut(Exception):
    """The fault ended this connection on purpose."""


class FaultProxy(_BackgroundServer):
    """An HTTP/1.1 reverse proxy in front of a plain-HTTP server that injects faults.

    Clients talk to it as if it were the registry (``proxy.netloc``). Requests and
    responses are relayed as they are (headers, chunked framing, keep-alive); the only
    rewrite is a ``Location`` response header whose absolute URL points at the upstream
    (or one of ``upstream_aliases``), which is made to point back at the proxy (at the
    client's ``Host`` if it sent one), so upload sessions keep going through the proxy.
    ``rewrite_host=True`` also sends the upstream's own host:port as ``Host``.

    Each client connection gets its own upstream connection. A request may meet a fault
    from the explicit ``rules`` (first live matching rule wins; see :class:`FaultRule`)
    or, failing that, from the seeded RNG: with probability ``rate`` one of ``kinds``
    (kind names or template rules, whose method/path_regex restrict where they apply)
    is picked. One ``random()`` draw happens per request whatever the rules say, so the
    sequence of random decisions depends only on ``seed`` and the order of requests.

    ``stats()`` gives counters; ``requests()``/``count()`` give the request log.
    ``Expect: 100-continue`` is answered by the proxy itself.
    """

    _thread_name = "fault-proxy"

    def __init__(
        self,
        target: tuple[str, int] | str,
        *,
        rules: Iterable[FaultRule] = (),
        rate: float = 0.0,
        seed: int | str | None = 0,
        kinds: Iterable[FaultKind | FaultRule] = ("reset", "status", "429", "truncate"),
        rewrite_host: bool = False,
        upstream_aliases: Iterable[str] = (),
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        super().__init__(listen_host, listen_port)
        self.target = parse_hostport(target)
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        self.rate = rate
        self._rng = random.Random(seed)
        self._templates = [k if isinstance(k, FaultRule) else FaultRule(kind=k, times=None) for k in kinds]
        if rate and not self._templates:
            raise ValueError("rate > 0 needs at least one fault kind")
        self._rules: list[FaultRule] = list(rules)
        self.rewrite_host = rewrite_host
        host, port = self.target
        names = {_netloc(host, port).lower(), *(a.lower() for a in upstream_aliases)}
        if host in ("127.0.0.1", "localhost", "::1"):
            names.update(f"{n}:{port}" for n in _LOOPBACK_NAMES)
        if port == 80:
            names.add(host.lower())
        self._upstream_names = frozenset(names)
        self._log: list[RequestRecord] = []
        self._counts: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._statuses: Counter[int] = Counter()

    # -- public ---------------------------------------------------------------------------

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def set_rate(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        with self._lock:
            self.rate = rate

    def stats(self) -> dict[str, Any]:
        """Counters since start (or the last :meth:`reset_stats`)."""
        with self._lock:
            return {
                "connections": self._connections,
                "requests": self._counts["requests"],
                "forwarded": self._counts["forwarded"],
                "bad_requests": self._counts["bad_requests"],
                "faults": dict(self._faults),
                "faults_total": sum(self._faults.values()),
                "status": dict(self._statuses),
                "bytes_from_clients": self._counts["bytes_from_clients"],
                "bytes_to_clients": self._counts["bytes_to_clients"],
                "bytes_to_upstream": self._counts["bytes_to_upstream"],
                "bytes_from_upstream": self._counts["bytes_from_upstream"],
                "errors": self._errors,
                "last_error": self._last_error,
            }

    def reset_stats(self) -> None:
        """Forget counters and the request log (rules and the RNG state are kept)."""
        with self._lock:
            self._log.clear()
            self._counts.clear()
            self._faults.clear()
            self._statuses.clear()
            self._errors = 0
            self._last_error = None

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[RequestRecord]:
        """The request log in arrival order, optionally filtered like a rule."""
        with self._lock:
            log = list(self._log)
        regex = re.compile(path_regex) if path_regex is not None else None
        return [
            r
            for r in log
            if (method is None or r.method == method.upper()) and (regex is None or regex.search(r.path))
        ]

    def count(self, method: str | None = None, path_regex: str | None = None) -> int:
        return len(self.requests(method, path_regex))

    def methods(self) -> set[str]:
        return {r.method for r in self.requests()}

    # -- fault choice -----------------------------------------------------------------------

    def _choose(self, method: str, path: str) -> tuple[FaultRule | None, int]:
        with self._lock:
            draw = self._rng.random() if self.rate > 0 else 1.0
            for rule in self._rules:
                if rule.exhausted or not rule.matches(method, path):
                    continue
                rule.matched += 1
                if rule.matched <= rule.skip:
                    continue
                rule.fired += 1
                return rule, rule.resolved_status()
            if draw < self.rate:
                eligible = [t for t in self._templates if t.matches(method, path)]
                if eligible:
                    template = self._rng.choice(eligible)
                    return template, template.resolved_status(self._rng)
        return None, 0

    # -- connection handling ----------------------------------------------------------------

    def _add(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    async def _to_client(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self._add("bytes_to_clients", len(data))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn_id: int) -> None:
        upstream = _Upstream(self.target)
        try:
            while True:
                first = await reader.read(1)
                if not first:
                    return
                try:
                    if first == b"\x16":  # a TLS ClientHello: "https first, then http" clients
                        raise _ProtocolError("TLS handshake on a plain HTTP port")
                    head = await _read_head(reader, first)
                    if head is None:
                        return
                    request_line = _request_line(head)
                except _ProtocolError:
                    # answer like a Go server would, so such clients fail fast and fall back
                    with self._lock:
                        self._counts["bad_requests"] += 1
                    await self._to_client(writer, _BAD_REQUEST)
                    return
                if not await self._exchange(head, request_line, reader, writer, upstream, conn_id):
                    return
        except _Cut:
            return
        finally:
            upstream.close()

    async def _exchange(
        self,
        req: _Head,
        request_line: tuple[str, str, str],
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        upstream: _Upstream,
        conn_id: int,
    ) -> bool:
        """Relay one request/response; returns whether the client connection stays open."""
        method, target, version = request_line
        self._add("bytes_from_clients", len(req.encode()))
        rec = RequestRecord(method=method, path=target, connection=conn_id, started=time.monotonic())
        with self._lock:
            self._log.append(rec)
            self._counts["requests"] += 1
        conn_tokens = req.tokens("connection")
        keep_alive = "close" not in conn_tokens and (version != "HTTP/1.0" or "keep-alive" in conn_tokens)
        req_kind, req_len = req.framing()
        if req_kind == "close":
            raise _ProtocolError("request with a non-chunked Transfer-Encoding")
        expect = "100-continue" in req.tokens("expect")
        client_host = req.get("host")

        rule, status = self._choose(method, target)
        kind = rule.kind if rule is not None else None
        if kind is not None:
            rec.fault = kind
            with self._lock:
                self._faults[kind] += 1

        try:
            # -- faults answered without the upstream --------------------------------
            if (
                rule is not None
                and not rule.forward
                and (kind in _SYNTHETIC or (kind == "reset" and rule.after_bytes is None))
            ):
                if expect:  # the body will not come without a 100; answer and drop it
                    keep_alive = False
                else:
                    async for piece in _iter_body(creader, req_kind, req_len):
                        rec.request_bytes += len(piece)
                        self._add("bytes_from_clients", len(piece))
                if kind == "reset":
                    _abort_with_rst(cwriter)
                    raise _Cut
                await self._synthetic(cwriter, rec, method, status, rule, keep_alive)
                return keep_alive

            # -- forward the request -----------------------------------------------------
            if expect:
                req.remove("expect")
                await self._to_client(cwriter, b"HTTP/1.1 100 Continue\r\n\r\n")
            if self.rewrite_host:
                req.replace("Host", _netloc(*self.target))
            replayable = method in ("GET", "HEAD", "OPTIONS", "DELETE") and (
                req_kind == "none" or (req_kind == "length" and req_len == 0)
            )
            for attempt in range(2):
                try:
                    ureader, uwriter, resp, rstatus = await self._forward(
                        req, creader, upstream, req_kind, req_len, rec, cwriter, expect
                    )
                    break
                except (OSError, _ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    reused = upstream.reused
                    upstream.close()
                    if attempt == 0 and reused and replayable:
                        continue  # a kept-alive upstream connection went stale: try a fresh one
                    with contextlib.suppress(OSError):
                        await self._synthetic(cwriter, rec, method, 502, None, False)
                    return False
            rec.forwarded = True
            self._add("forwarded", 1)
            resp_kind, resp_len = resp.framing()
            if method == "HEAD" or rstatus in (204, 304) or rstatus == 101:
                resp_kind, resp_len = "none", 0
            elif resp_kind == "none":
                resp_kind = "close"
            rtokens = resp.tokens("connection")
            upstream_keep = resp_kind != "close" and "close" not in rtokens
            if resp.start.startswith("HTTP/1.0 ") and "keep-alive" not in rtokens:
                upstream_keep = False
            keep_alive = keep_alive and upstream_keep

            # -- faults applied after forwarding, discarding the real response -----------
            if rule is not None and (kind in _SYNTHETIC or (kind == "reset" and rule.after_bytes is None)):
                async for piece in _iter_body(ureader, resp_kind, resp_len):
                    self._add("bytes_from_upstream", len(piece))
                if not upstream_keep:
                    upstream.close()
                if kind == "reset":
                    _abort_with_rst(cwriter)
                    raise _Cut
                await self._synthetic(cwriter, rec, method, status, rule, keep_alive)
                return keep_alive

            # -- relay the real response (maybe faulted) -------------------------------
            location = resp.get("location")
            if location is not None:
                new = self._rewrite_location(location, client_host)
                if new != location:
                    resp.replace("Location", new)
            rec.status = rstatus
            with self._lock:
                self._statuses[rstatus] += 1
            limit: int | None = None
            if kind in ("reset", "truncate", "stall") and rule is not None:
                limit = rule.after_bytes
                if kind == "truncate" and limit is None:
                    limit = resp_len // 2 if resp_kind == "length" else 0
            if kind == "stall" and rule is not None and limit is None:
                await asyncio.sleep(rule.seconds)
            await self._to_client(cwriter, resp.encode())
            sent = 0
            throttle_start = time.monotonic()
            stalled = False
            body = _iter_body(ureader, resp_kind, resp_len)
            async for piece in body:
                self._add("bytes_from_upstream", len(piece))
                if limit is not None and not stalled and sent + len(piece) >= limit:
                    head, piece = piece[: limit - sent], piece[limit - sent :]
                    if head:
                        await self._to_client(cwriter, head)
                        sent += len(head)
                        rec.response_bytes = sent
                    if kind == "stall" and rule is not None:
                        stalled = True
                        await asyncio.sleep(rule.seconds)
                    else:
                        await body.aclose()
                        self._cut(cwriter, kind, upstream)
                if not piece:
                    continue
                if kind == "slow" and rule is not None:
                    await self._throttled(cwriter, piece, rule.bytes_per_second, throttle_start, sent, rec)
                else:
                    await self._to_client(cwriter, piece)
                sent += len(piece)
                rec.response_bytes = sent
            if kind in ("reset", "truncate"):
                self._cut(cwriter, kind, upstream)  # body shorter than the limit: still cut
            if not upstream_keep:
                upstream.close()
            return keep_alive
        finally:
            rec.finished = time.monotonic()

    async def _forward(
        self,
        req: _Head,
        creader: asyncio.StreamReader,
        upstream: _Upstream,
        req_kind: str,
        req_len: int,
        rec: RequestRecord,
        cwriter: asyncio.StreamWriter,
        expect: bool,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Head, int]:
        """Send the request upstream; return its final response head (1xx relayed, but 100)."""
        ureader, uwriter = await upstream.connect()
        head_bytes = req.encode()
        uwriter.write(head_bytes)
        self._add("bytes_to_upstream", len(head_bytes))
        async for piece in _iter_body(creader, req_kind, req_len):
            rec.request_bytes += len(piece)
            self._add("bytes_from_clients", len(piece))
            uwriter.write(piece)
            self._add("bytes_to_upstream", len(piece))
            await uwriter.drain()
        await uwriter.drain()
        while True:
            resp = await _read_head(ureader)
            if resp is None:
                raise _ProtocolError("upstream closed without a response")
            self._add("bytes_from_upstream", len(resp.encode()))
            parts = resp.start.split(" ", 2)
            try:
                status = int(parts[1])
            except (IndexError, ValueError):
                raise _ProtocolError(f"bad status line {resp.start[:100]!r}") from None
            if 100 <= status < 200 and status != 101:
                if status != 100 and not expect:
                    await self._to_client(cwriter, resp.encode())
                continue
            return ureader, uwriter, resp, status

    def _cut(self, cwriter: asyncio.StreamWriter, kind: str | None, upstream: _Upstream) -> None:
        upstream.close()  # the rest of its response was not read
        if kind == "reset":
            _abort_with_rst(cwriter)
        else:
            cwriter.close()
        raise _Cut

    async def _throttled(
        self,
        cwriter: asyncio.StreamWriter,
        data: bytes,
        rate: float,
        start: float,
        sent_before: int,
        rec: RequestRecord,
    ) -> None:
        step = max(1, min(16 * 1024, int(rate / 20)))
        sent = sent_before
        for i in range(0, len(data), step):
            part = data[i : i + step]
            wait = start + (sent + len(part)) / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._to_client(cwriter, part)
            sent += len(part)
            rec.response_bytes = sent

    async def _synthetic(
        self,
        cwriter: asyncio.StreamWriter,
        rec: RequestRecord,
        method: str,
        status: int,
        rule: FaultRule | None,
        keep_alive: bool,
    ) -> None:
        code = {429: "TOOMANYREQUESTS", 503: "UNAVAILABLE"}.get(status, "UNKNOWN")
        what = "injected fault" if rule is not None else "upstream connection failed"
        body = json.dumps({"errors": [{"code": code, "message": f"netproxy: {what} ({status})"}]}).encode()
        reason = _REASONS.get(status, "Error")
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if rule is not None and rule.kind == "429" and rule.retry_after is not None:
            lines.append(f"Retry-After: {rule.retry_after}")
        if not keep_alive:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if method != "HEAD":
            data += body
            rec.response_bytes = len(body)
        rec.status = status
        with self._lock:
            self._statuses[status] += 1
        await self._to_client(cwriter, data)

    def _rewrite_location(self, value: str, client_host: str | None) -> str:
        try:
            parts = urlsplit(value)
        except ValueError:
            return value
        if parts.scheme.lower() not in ("http", "") or not parts.netloc:
            return value
        if parts.netloc.lower() not in self._upstream_names:
            return value
        return urlunsplit(parts._replace(netloc=client_host or self.netloc))


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
