"""Run a latency proxy in front of a registry (or anything on TCP) for benchmarks.

    python bench/latency_proxy.py --listen 0 --target 127.0.0.1:5000 --delay-ms 25

prints the port it listens on (one line on stdout, flushed), then runs until SIGINT or
SIGTERM and prints its counters on stderr. The implementation lives in
``tests/support/netproxy.py`` (``LatencyProxy``); this is only a command line around it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {value!r}")
    return (host.strip("[]") if sep and host else "127.0.0.1"), int(port)


def _target(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="latency_proxy.py",
        description="TCP proxy adding a one-way delay to every byte in each direction (HTTP and TLS alike).",
    )
    p.add_argument(
        "--listen",
        type=_listen,
        default=("127.0.0.1", 0),
        metavar="[HOST:]PORT",
        help="where to listen (default 127.0.0.1:0, a free port)",
    )
    p.add_argument("--target", type=_target, required=True, metavar="HOST:PORT", help="where to forward")
    p.add_argument("--delay-ms", type=float, default=25.0, help="one-way delay, both directions (default 25)")
    p.add_argument("--up-delay-ms", type=float, help="client->target delay (overrides --delay-ms)")
    p.add_argument("--down-delay-ms", type=float, help="target->client delay (overrides --delay-ms)")
    bw = p.add_mutually_exclusive_group()
    bw.add_argument(
        "--bandwidth-mbit", type=float, help="cap each direction at N Mbit/s (shared by connections)"
    )
    bw.add_argument("--bandwidth", type=float, metavar="BYTES_PER_S", help="cap each direction at N bytes/s")
    p.add_argument(
        "--handshake",
        action="store_true",
        help="also charge new connections one round trip, as a TCP handshake would",
    )
    p.add_argument("--quiet", action="store_true", help="do not print counters on exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.netproxy import LatencyProxy

    bandwidth = args.bandwidth
    if args.bandwidth_mbit is not None:
        bandwidth = args.bandwidth_mbit * 1_000_000 / 8

    def ms(value: float | None) -> float | None:
        return None if value is None else value / 1000.0

    proxy = LatencyProxy(
        target=args.target,
        delay=args.delay_ms / 1000.0,
        upstream_delay=ms(args.up_delay_ms),
        downstream_delay=ms(args.down_delay_ms),
        bandwidth=bandwidth,
        emulate_handshake=args.handshake,
        listen_host=args.listen[0],
        listen_port=args.listen[1],
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with proxy:
        print(proxy.port, flush=True)
        print(
            f"latency proxy {proxy.netloc} -> {args.target[0]}:{args.target[1]} "
            f"(+{proxy.upstream_delay * 1000:g} ms up, +{proxy.downstream_delay * 1000:g} ms down"
            + (f", {bandwidth:g} B/s" if bandwidth else "")
            + ")",
            file=sys.stderr,
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        stats = proxy.stats()
    if not args.quiet:
        print(json.dumps(stats), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
