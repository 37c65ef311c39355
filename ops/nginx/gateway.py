"""Run the ERP rate-limit gateway (Debian nginx) unprivileged-style in a work dir.

    python ops/nginx/gateway.py start --dir var/erp-gw --port 18080 --upstream 127.0.0.1:8000 \
        --rate 10 --burst 5
    python ops/nginx/gateway.py stop --dir var/erp-gw

Renders ``erp-gateway.conf.tmpl`` into ``--dir/nginx.conf`` and runs
``nginx -c CONF -p DIR -e DIR/error.log`` in the foreground of its own process
group (pid in ``--dir/gateway.pid``). Installs nginx with apt-get when it is
missing. ``read_access_log`` parses the access log (one line per request the
gateway saw, 429s included). Stdlib only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # ops/: procgroup
from procgroup import stop_pid, stop_pid_file, wait_port

HERE = Path(__file__).resolve().parent
NGINX = "/usr/sbin/nginx"


@dataclass(frozen=True)
class Gateway:
    pid: int
    base_url: str
    access_log: Path
    error_log: Path


@dataclass(frozen=True)
class AccessLine:
    ts: float  # epoch seconds with ms
    status: int
    method: str
    uri: str
    request_time_s: float


def ensure_nginx() -> str:
    """Path of the nginx binary; ``apt-get install -y nginx`` when missing."""
    found = shutil.which("nginx") or (NGINX if os.path.exists(NGINX) else None)
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True, env=env, stdout=subprocess.DEVNULL)
    return NGINX


def nginx_rate(rate_per_s: float) -> str:
    """nginx takes whole requests per second or per minute."""
    if float(rate_per_s).is_integer():
        return f"{int(rate_per_s)}r/s"
    return f"{max(1, round(rate_per_s * 60))}r/m"


def render(workdir: Path, port: int, upstream: str, rate_per_s: float, burst: int, retry_after_s: int) -> Path:
    values = {"dir": str(workdir), "port": str(port), "upstream": upstream, "rate": nginx_rate(rate_per_s),
              "burst": str(burst), "retry_after": str(retry_after_s)}
    text = (HERE / "erp-gateway.conf.tmpl").read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    conf = workdir / "nginx.conf"
    conf.write_text(text)
    return conf


def start(workdir: Path, port: int, upstream: str, *, rate_per_s: float, burst: int,
          retry_after_s: int = 1, timeout_s: float = 10.0) -> Gateway:
    """Start nginx on ``127.0.0.1:port`` proxying to ``upstream`` (host:port)."""
    nginx = ensure_nginx()
    workdir = workdir.resolve()
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    conf = render(workdir, port, upstream, rate_per_s, burst, retry_after_s)
    error_log = workdir / "error.log"
    subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(workdir), "-e", str(error_log)], check=True)
    with open(workdir / "nginx.out", "ab") as out:
        proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir), "-e", str(error_log)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    (workdir / "gateway.pid").write_text(str(proc.pid))
    try:
        wait_port(port, proc, timeout_s, "nginx")
    except BaseException:
        stop_pid(proc.pid)
        raise
    return Gateway(pid=proc.pid, base_url=f"http://127.0.0.1:{port}", access_log=workdir / "access.log",
                   error_log=error_log)


def stop(workdir: Path) -> None:
    stop_pid_file(workdir / "gateway.pid")


def read_access_log(path: Path) -> list[AccessLine]:
    """Every request line of the gateway's access log, in order."""
    lines = []
    if not path.exists():
        return lines
    for raw in path.read_text().splitlines():
        ts, status, method, rest = raw.split(" ", 3)
        uri, _, tail = rest.rpartition('" ')
        request_time = tail.split(" ", 1)[0]
        lines.append(AccessLine(float(ts), int(status), method, uri.lstrip('"'), float(request_time)))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, default=HERE.parent.parent / "var" / "erp-gateway")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--upstream", default="127.0.0.1:8000")
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second (= ERP_RATE_PER_S)")
    parser.add_argument("--burst", type=int, default=5, help="= ERP_BURST")
    parser.add_argument("--retry-after", type=int, default=1)
    args = parser.parse_args()
    if args.action == "stop":
        stop(args.dir)
        return
    gateway = start(args.dir, args.port, args.upstream, rate_per_s=args.rate, burst=args.burst,
                    retry_after_s=args.retry_after)
    print(json.dumps({"pid": gateway.pid, "base_url": gateway.base_url, "access_log": str(gateway.access_log)}))


if __name__ == "__main__":
    main()
