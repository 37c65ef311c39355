"""The chaos verifier's "out of order" count rests on the fault proxy's times: a call the
sink sends after it got its predecessor's answer must be logged as arriving after that
answer. (A full run once counted two calls "out of order by 1 ms": the log kept
milliseconds and the arrival was derived as answer - duration, two roundings apart.)"""
from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

from app.harness.chaos import verify
from app.harness.processes import ops_module

proxy = ops_module("chaos/faultproxy.py")

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(_OK)
    await writer.drain()
    writer.close()


async def _call(port: int, uri: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST {uri} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def _sequential_calls(workdir: Path, n: int) -> None:
    upstream = await asyncio.start_server(_upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    server = proxy.Server(workdir, f"127.0.0.1:{up_port}")
    front = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = front.sockets[0].getsockname()[1]
    async with upstream, front:
        for i in range(n):  # one after the other, as the sink posts one document's steps
            answer = await _call(port, f"/db/rest/model/stock.shipment.out/{i}/{('pick', 'pack', 'do')[i % 3]}")
            assert answer.startswith(b"HTTP/1.1 200")
    server.log.close()


def test_a_call_sent_after_an_answer_is_logged_as_arriving_after_it(tmp_path: Path) -> None:
    asyncio.run(_sequential_calls(tmp_path, 60))
    lines = proxy.read_log(tmp_path / "proxy.log")
    assert len(lines) == 60
    for before, after in pairwise(lines):
        assert before.arrived <= before.ts
        assert after.arrived > before.ts, (before, after)
    # and the verifier reads exactly those two times
    times = verify.state_change_times((p.arrived, p.ts, p.method, p.uri, p.upstream_status) for p in lines)
    assert times[("stock.shipment.out", 1, "pack")] == [(lines[1].arrived, lines[1].ts)]


def test_old_log_lines_without_an_arrival_still_read(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text('1700000000.500 pass 200 POST "/db/rest/model/stock.shipment.out/3/pick" 0.250\n'
                   '1700000001.000000 pass 200 POST "/db/rest/model/stock.shipment.out/3/pack" 0.100000 1700000000.900000\n')
    first, second = proxy.read_log(log)
    assert (first.arrived, first.ts, first.seconds) == (1700000000.25, 1700000000.5, 0.25)
    assert (second.arrived, second.uri) == (1700000000.9, "/db/rest/model/stock.shipment.out/3/pack")
