"""The stdlib helpers of the ERP ops scripts (no server started)."""
from __future__ import annotations

from pathlib import Path

from app.harness.processes import ops_module

gateway = ops_module("nginx/gateway.py")
init_db = ops_module("erp/init_db.py")


def test_nginx_rates_are_whole_requests_per_second_or_minute() -> None:
    assert gateway.nginx_rate(10) == "10r/s"
    assert gateway.nginx_rate(2.5) == "150r/m"
    assert gateway.nginx_rate(0.001) == "1r/m"


def test_the_gateway_config_renders_every_placeholder(tmp_path: Path) -> None:
    conf = gateway.render(tmp_path, 18080, "127.0.0.1:8000", 10, 5, 1).read_text()
    assert "{{" not in conf
    assert "rate=10r/s" in conf and "burst=5 nodelay" in conf and "add_header Retry-After 1 always" in conf
    assert "limit_req_status 429" in conf and f"access_log {tmp_path}/access.log erp" in conf


def test_the_access_log_parses(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text('1795786364.879 200 GET "/erp/rest/model/res.user?s=1" 0.065 200\n'
                   '1795786364.881 429 POST "/erp/rest/model/x/1/pick?f=state" 0.000 -\n')
    first, second = gateway.read_access_log(log)
    assert (first.ts, first.status, first.method, first.uri) == (1795786364.879, 200, "GET", "/erp/rest/model/res.user?s=1")
    assert (second.status, second.method, second.request_time_s) == (429, "POST", 0.0)


def test_the_trytond_config_points_at_the_run_dir(tmp_path: Path) -> None:
    text = init_db.render_config(tmp_path, 8123, tmp_path / "trytond.conf").read_text()
    assert f"path = {tmp_path}" in text and "listen = 127.0.0.1:8123" in text
