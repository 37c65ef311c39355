"""A tiny fault-injecting HTTP proxy between the nginx gateway and Tryton (chaos runs).

    python ops/chaos/faultproxy.py start --dir var/chaos/proxy --port 18090 --upstream 127.0.0.1:8000
    python ops/chaos/faultproxy.py mode --dir var/chaos/proxy error        # or pass, timeout, ...
    python ops/chaos/faultproxy.py stop --dir var/chaos/proxy

    worker -> nginx gateway (quota; 429 storm) -> this proxy (500s, timeouts) -> Tryton

The proxy forwards each request to the upstream (one upstream connection per request,
``Connection: close``) unless the current mode says otherwise. The mode lives in
``DIR/mode.json`` (re-read when the file changes), so the harness flips it by writing
the file (``set_mode``):

- ``pass``: forward.
- ``error``: answer 500/502/503 (random) without forwarding: the ERP is broken.
- ``timeout``: forward nothing; hold the connection ``hold_s`` seconds, then close it
  without an answer: the ERP hangs.
- ``commit-timeout``: forward, let the ERP answer (so the change is committed), then hold
  the answer ``hold_s`` seconds and close without it: the worst case for "posted twice".
- ``mixed``: per request, with probability ``p``, one of error/timeout/commit-timeout;
  otherwise forward.
- ``echo-auth``: requests whose URI contains ``match`` get a 400 whose body echoes the
  request's headers (an ERP that puts your credentials in its error message); others
  are forwarded. For the security test.

Any fault mode takes ``only``: a regular expression searched in ``"<METHOD> <uri>"``;
requests it does not match are forwarded (e.g. ``only="^POST [^?]*/rest/model/[a-z.]+(\\?|$)"``:
only creates lose their answer).

An unreachable upstream (Tryton stopped) is answered 502. ``DIR/proxy.log`` has one line
per request: ``<epoch s> <action> <upstream status or -> <method> "<uri>" <seconds> <arrival epoch s>``
(microseconds; the first time is taken right after the answer was handed to the socket, the
last when the request's connection was accepted, both from the wall clock so that a call that
followed an answer always has a later arrival than that answer; for the two timeout modes the
line is written when the hold starts);
the upstream status is what the ERP itself answered (``-``: the ERP never answered), so
the log counts what reached and changed the ERP even when the client saw a timeout.
Stdlib only (importable from the app venv and runnable with any python3).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ops/: procgroup
from procgroup import stop_pid, stop_pid_file, wait_port

MODES = ("pass", "error", "timeout", "commit-timeout", "mixed", "echo-auth")
_FAULTS = ("error", "timeout", "commit-timeout")
MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Proxy:
    pid: int
    address: str  # host:port, the gateway's upstream
    log: Path
    mode_file: Path


@dataclass(frozen=True)
class ProxyLine:
    ts: float
    action: str
    upstream_status: int | None
    method: str
    uri: str
    seconds: float
    #: When the request's connection was accepted (wall clock; older logs: ts - seconds).
    arrived: float


# -- the server ---------------------------------------------------------------------------------


class _Mode:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.value: dict = {"mode": "pass"}

    def current(self) -> dict:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self.stamp:
                self.value = json.loads(self.path.read_text() or "{}") or {"mode": "pass"}
                self.stamp = stamp
        except (OSError, ValueError):
            pass
        return self.value


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, str, str, dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, uri, _version = lines[0].split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    length = int(headers.get("content-length") or 0)
    if length:
        body = await reader.readexactly(length)
    return head, method, uri, headers, body


def _rebuild(head: bytes, body: bytes) -> bytes:
    """The request as sent upstream: one request per connection."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [lines[0]] + [line for line in lines[1:] if line and not line.lower().startswith(("connection:", "keep-alive:"))]
    return ("\r\n".join(kept) + "\r\nConnection: close\r\n\r\n").encode("latin-1") + body


def _status_of(response: bytes) -> int | None:
    try:
        return int(response.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def _answer(status: int, body: bytes, extra: str = "") -> bytes:
    reason = {400: "Bad Request", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
    return (f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n").encode() + body


class Server:
    def __init__(self, workdir: Path, upstream: str) -> None:
        self.mode = _Mode(workdir / "mode.json")
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.log = open(workdir / "proxy.log", "a", buffering=1)  # noqa: SIM115 - lives as long as the server
        self.rng = random.Random()

    def _log(self, started: tuple[float, float], action: str, status: int | None, method: str, uri: str) -> None:
        mono, wall = started
        self.log.write(f"{time.time():.6f} {action} {status if status is not None else '-'} {method} "
                       f'"{uri}" {time.monotonic() - mono:.6f} {wall:.6f}\n')

    async def _forward(self, request: bytes) -> bytes | None:
        try:
            reader, writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            return None
        try:
            writer.write(request)
            await writer.drain()
            return await reader.read()  # Connection: close -> the whole answer
        except (OSError, asyncio.IncompleteReadError):
            return None
        finally:
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = (time.monotonic(), time.time())
        try:
            parsed = await _read_request(reader)
            if parsed is None:
                return
            head, method, uri, headers, body = parsed
            conf = self.mode.current()
            mode = conf.get("mode", "pass")
            hold_s = float(conf.get("hold_s", 15))
            if mode == "mixed":
                mode = self.rng.choice(_FAULTS) if self.rng.random() < float(conf.get("p", 0.3)) else "pass"
            if mode == "echo-auth" and conf.get("match", "") not in uri:
                mode = "pass"
            only = conf.get("only")
            if only and mode in _FAULTS and not re.search(only, f"{method} {uri}"):
                mode = "pass"
            if mode == "error":
                status = self.rng.choice((500, 502, 503))
                writer.write(_answer(status, b'{"error": "chaos: the ERP is broken"}'))
                self._log(started, "error", None, method, uri)
            elif mode == "timeout":
                self._log(started, "timeout", None, method, uri)  # logged before the hold
                await asyncio.sleep(hold_s)
            elif mode == "echo-auth":
                echoed = json.dumps({"error": "invalid request", "received_headers": headers}).encode()
                writer.write(_answer(400, echoed))
                self._log(started, "echo-auth", None, method, uri)
            else:
                response = await self._forward(_rebuild(head, body))
                status = None if response is None else _status_of(response)
                if mode == "commit-timeout" and response is not None:
                    self._log(started, "commit-timeout", status, method, uri)  # logged before the hold
                    await asyncio.sleep(hold_s)
                elif response is None:
                    writer.write(_answer(502, b'{"error": "chaos proxy: upstream unreachable"}'))
                    self._log(started, "unreachable", None, method, uri)
                else:
                    writer.write(response)
                    self._log(started, "pass", status, method, uri)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def serve(workdir: Path, port: int, upstream: str) -> None:
    server = Server(workdir, upstream)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", port, limit=MAX_HEAD, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with srv:
        await stop.wait()


# -- control (used by the chaos harness and the tests) ------------------------------------------


def set_mode(workdir: Path, mode: str, **options: object) -> None:
    """Switch the running proxy's mode (atomically: write then rename)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    tmp = workdir / "mode.json.tmp"
    tmp.write_text(json.dumps({"mode": mode, **options}))
    os.replace(tmp, workdir / "mode.json")


def start(workdir: Path, port: int, upstream: str, timeout_s: float = 10.0) -> Proxy:
    """Start the proxy on ``127.0.0.1:port`` in its own process group, mode ``pass``."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    set_mode(workdir, "pass")
    with open(workdir / "proxy.out", "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "serve", "--dir", str(workdir), "--port", str(port),
             "--upstream", upstream],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (workdir / "proxy.pid").write_text(str(proc.pid))
    try:
        wait_port(port, proc, timeout_s, "fault proxy")
    except BaseException:
        stop_pid(proc.pid)
        raise
    return Proxy(pid=proc.pid, address=f"127.0.0.1:{port}", log=workdir / "proxy.log",
                 mode_file=workdir / "mode.json")


def stop(workdir: Path) -> None:
    stop_pid_file(workdir / "proxy.pid")


def read_log(path: Path) -> list[ProxyLine]:
    """Every request line of the proxy log, in order."""
    out: list[ProxyLine] = []
    if not path.exists():
        return out
    for raw in path.read_text().splitlines():
        try:
            ts, action, status, method, rest = raw.split(" ", 4)
            uri, _, tail = rest.rpartition('" ')
            seconds, _, arrived = tail.partition(" ")
            out.append(ProxyLine(float(ts), action, None if status == "-" else int(status), method,
                                 uri.lstrip('"'), float(seconds),
                                 float(arrived) if arrived else float(ts) - float(seconds)))
        except ValueError:
            continue
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop", "serve", "mode"])
    parser.add_argument("mode", nargs="?", choices=MODES)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parents[2] / "var" / "chaos-proxy")
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--upstream", default="127.0.0.1:8000")
    parser.add_argument("--hold", type=float, default=15.0, help="timeout modes: seconds to hold")
    parser.add_argument("--p", type=float, default=0.3, help="mixed mode: fault probability")
    parser.add_argument("--match", default="", help="echo-auth mode: URI substring")
    args = parser.parse_args()
    if args.action == "serve":
        asyncio.run(serve(args.dir, args.port, args.upstream))
    elif args.action == "stop":
        stop(args.dir)
    elif args.action == "mode":
        set_mode(args.dir, args.mode or "pass", hold_s=args.hold, p=args.p, match=args.match)
    else:
        proxy = start(args.dir, args.port, args.upstream)
        print(json.dumps({"pid": proxy.pid, "address": proxy.address, "log": str(proxy.log)}))


if __name__ == "__main__":
    main()
