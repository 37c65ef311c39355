"""Secrets never leak: the ERP key, the Kafka SASL password and the admin token appear in no
log file, no web response and no Kafka record of a pipeline run, and a settings error never
echoes a secret.

The pipeline run: the chaos stack without faults (embedded broker on the session, Tryton
behind the fault proxy behind nginx, two workers at LOG_LEVEL=debug, `syncgov source`), a
few orders from sale to done shipment, with the key given in ``ERP_API_KEY`` (not a file),
``KAFKA_SASL_PASSWORD`` set with ``KAFKA_SECURITY_PROTOCOL=PLAINTEXT`` (Tansu has no SASL;
the value must still never show) and an ERP that echoes the request headers, key
included, in its error answers for stock moves (``echo-auth``): those milestones end as
ERP dead letters carrying the ERP's answer, which must be scrubbed.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app import settings
from app.harness.chaos import verify
from app.harness.chaos.run import Chaos, ChaosConfig, Say
from app.harness.processes import ops_module
from app.settings import SettingsError, load
from tests.conftest import worker_env

SASL_PASSWORD = "sasl-pw-Qx7!vT93#plain"
REGISTRY_PASSWORD = "sr-pw-Lm3$k9Vd"
ADMIN_TOKEN = "admin-tok-4Hh2kWq8Zr"
ECHO_MATCH = "stock.shipment.internal"


# -- settings errors ---------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "ERP_", "WORKER_", "TOPIC_", "SCHEMA_REGISTRY_", "OUTPUT_"))}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.mark.parametrize(("bad", "named"), [
    pytest.param({"ERP_RATE_PER_S": "fast"}, "ERP_RATE_PER_S", id="another-setting-bad"),
    pytest.param({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME", id="sasl-without-user"),
    pytest.param({"KAFKA_SECURITY_PROTOCOL": "KERBEROS"}, "KAFKA_SECURITY_PROTOCOL", id="bad-protocol"),
    pytest.param({"ERP_ADAPTER": "http"}, "ERP_HTTP_ROUTES", id="http-without-routes"),
    pytest.param({"ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": "{}", "ERP_API_KEY": "",
                  "ERP_OAUTH_TOKEN_URL": "https://idp.example/token"}, "ERP_OAUTH_CLIENT_ID", id="oauth-without-client"),
    pytest.param({"SCHEMA_REGISTRY_URL": f"https://user:{REGISTRY_PASSWORD}@sr.example"}, "SCHEMA_REGISTRY_URL",
                 id="registry-url-with-credentials"),
    pytest.param({"OUTPUT_FORMAT": "confluent"}, "SCHEMA_REGISTRY_URL", id="confluent-output-without-registry"),
])
def test_check_config_errors_never_echo_secrets(bad: dict[str, str], named: str) -> None:
    env = {"KAFKA_SASL_PASSWORD": SASL_PASSWORD, "ERP_API_KEY": "erp-key-8Jd0Lq", "WORKER_ADMIN_TOKEN": ADMIN_TOKEN,
           "ERP_OAUTH_CLIENT_SECRET": "oauth-secret-3Rt6",
           "SCHEMA_REGISTRY_USERNAME": "syncgov", "SCHEMA_REGISTRY_PASSWORD": REGISTRY_PASSWORD, **bad}
    done = cli(env, "check-config")
    assert done.returncode == 2, done
    out = done.stdout + done.stderr
    assert "configuration error" in out and named in out, out
    for secret in (SASL_PASSWORD, "erp-key-8Jd0Lq", ADMIN_TOKEN, "oauth-secret-3Rt6", REGISTRY_PASSWORD):
        assert secret not in out


def test_settings_error_on_a_secret_masks_it_even_when_the_parser_echoes_the_value(monkeypatch) -> None:
    """Python's own parsers put the bad value in their message (``int('x')``: *invalid literal
    ... 'x'*). ``_read`` masks the value it shows for a secret, but must not let the parser's
    message echo it either."""
    def strict(raw: str) -> str:
        if not raw.isascii():
            raise ValueError(f"not ASCII: {raw!r}")
        return raw

    monkeypatch.setitem(settings.SPEC, "ERP_API_KEY", ("", strict))
    secret = "clé-secrète-Ü9"
    with pytest.raises(SettingsError) as err:
        load({"ERP_API_KEY": secret})
    assert "ERP_API_KEY" in str(err.value)
    assert secret not in str(err.value) and secret not in repr(err.value)


def test_unreadable_secret_file_names_the_variable(tmp_path: Path) -> None:
    directory = tmp_path / "a-dir"
    directory.mkdir()
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_SASL_PASSWORD_FILE": str(directory)})
    assert "KAFKA_SASL_PASSWORD_FILE" in str(err.value)


def test_secret_file_that_is_not_utf8_is_a_settings_error_without_the_content(tmp_path: Path) -> None:
    """A secret file in another encoding (or binary) must stop start-up with a settings error
    naming the variable, like any other bad value, and never show the content."""
    binary = tmp_path / "password.bin"
    binary.write_bytes(b"\xff\xfe" + SASL_PASSWORD.encode())
    done = cli({"KAFKA_SASL_PASSWORD_FILE": str(binary)}, "check-config")
    assert SASL_PASSWORD not in done.stdout + done.stderr
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_SASL_PASSWORD_FILE": str(binary)})
    assert "KAFKA_SASL_PASSWORD_FILE" in str(err.value) and SASL_PASSWORD not in str(err.value)


def test_loaded_settings_never_show_secrets() -> None:
    s = load({"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "KAFKA_SASL_PASSWORD": SASL_PASSWORD, "ERP_API_KEY": "erp-key-8Jd0Lq",
              "WORKER_ADMIN_TOKEN": ADMIN_TOKEN, "SCHEMA_REGISTRY_URL": "https://sr.example",
              "SCHEMA_REGISTRY_USERNAME": "syncgov", "SCHEMA_REGISTRY_PASSWORD": REGISTRY_PASSWORD})
    for text in (repr(s), str(s), repr(s.kafka), repr(s.erp), repr(s.worker), repr(s.schema_registry),
                 f"{s.erp.api_key}", f"{s.schema_registry.password}"):
        for secret in (SASL_PASSWORD, "erp-key-8Jd0Lq", ADMIN_TOKEN, REGISTRY_PASSWORD):
            assert secret not in text


# -- a pipeline run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    workdir = tmp_path_factory.mktemp("security")
    cfg = ChaosConfig(
        orders=3, seed=11, workdir=workdir, bootstrap=kafka_bootstrap, prefix=f"sec{int(time.time())}",
        kills=0, outage_s=0, storm_s=0, errors_s=0, scale=False, stalls=0, poison_rate=0.0, old_schema_share=0.0,
        warehouses=("WH1",),  # the trace checks below name the order's warehouse
        drain_timeout_s=240, key_in_env=True,
        extra_env={**worker_env(), "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT", "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                   "WORKER_ADMIN_TOKEN": ADMIN_TOKEN, "LOG_LEVEL": "debug"},
        proxy_mode={"mode": "echo-auth", "match": ECHO_MATCH},
    )
    chaos = Chaos(cfg, Say())
    # One loop for the whole module: its executor threads started the workers, which die with
    # the thread that started them (PR_SET_PDEATHSIG), so the loop lives until the teardown.
    loop = asyncio.new_event_loop()
    try:
        chaos.verdict = loop.run_until_complete(chaos.run())
        yield chaos
    finally:
        chaos.stop()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def secrets_of(chaos: Chaos) -> dict[str, bytes]:
    return {"ERP key": chaos.erp.key.encode(), "SASL password": SASL_PASSWORD.encode(),
            "admin token": ADMIN_TOKEN.encode()}


def http(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:  # no answer at all: recorded, and reported by the test
        return 0, repr(exc).encode()


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(600)
def test_the_flow_ran_and_the_echoing_erp_was_dead_lettered(secured_run: Chaos) -> None:
    v = secured_run.verdict
    assert v is not None
    assert v.orders_released == 3 and v.orders_done == 3, v.orders_wrong
    assert v.erp_dead_letters, "the echoing ERP should have rejected the stock moves"
    proxy_log = ops_module("chaos/faultproxy.py").read_log(secured_run.erp.proxy_log)
    assert any(line.action == "echo-auth" for line in proxy_log)


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(600)
def test_no_log_file_contains_a_secret(secured_run: Chaos) -> None:
    """Worker logs, source output, nginx access and error logs, the proxy log, Tryton's log,
    the worker stores: every file of the run except the ERP's own database and key file."""
    root = secured_run.workdir
    tryton = root / "erp" / "tryton"
    allowed = {tryton / "rest.key"} | set(tryton.glob("erp.sqlite*"))
    scanned = []
    leaks = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p not in allowed):
        data = path.read_bytes()
        scanned.append(path.relative_to(root).as_posix())
        leaks += [f"{name} in {path}" for name, secret in secrets_of(secured_run).items() if secret in data]
    assert leaks == []
    for must in ("source.log", "erp/nginx/access.log", "erp/nginx/error.log", "erp/proxy/proxy.log",
                 "erp/tryton/trytond.log", "workers/w1/worker.log", "workers/w2/worker.log"):
        assert must in scanned, f"{must} was not produced"
    debug = (root / "workers" / "w1" / "worker.log").read_text(errors="replace")
    assert "DEBUG" in debug or '"level":"debug"' in debug, "workers should log at debug level here"  # text or JSON


@pytest.fixture(scope="module")
def web_answers(secured_run: Chaos) -> dict[str, tuple[int, bytes]]:
    """Every worker's answers: health, metrics, the ops page, an order's trace (its events are
    governed on one worker and its ERP calls may be on the other), admin calls without a
    valid token."""
    assert secured_run.pool is not None
    order = sorted(secured_run.created)[0]
    answers: dict[str, tuple[int, bytes]] = {}
    for name, worker in secured_run.pool.workers.items():
        if worker.process is None:
            continue
        for path in ("/metrics", "/readyz", "/healthz", f"/orders/WH1/{order}/trace", "/", "/ops.js",
                     "/orders/WH1/NO-SUCH/trace", f"/orders/WH1/{order}/trace?part=lineage",
                     f"/orders/WH1/{order}/trace?part=erp", "/router/"):
            answers[f"{name} GET {path}"] = http("GET", worker.url + path)
        for auth in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}):
            answers[f"{name} POST /admin/dlq/replay {auth}"] = http(
                "POST", worker.url + "/admin/dlq/replay", auth, b'{"ids": []}')
    return answers


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(600)
def test_no_web_response_contains_a_secret(secured_run: Chaos, web_answers: dict[str, tuple[int, bytes]]) -> None:
    unanswered = {key: body.decode() for key, (code, body) in web_answers.items() if code == 0}
    assert unanswered == {}
    assert web_answers["w1 GET /metrics"][0] == 200 and web_answers["w1 GET /readyz"][0] == 200
    assert any(code in (401, 403) for key, (code, _) in web_answers.items() if "admin" in key)
    leaks = [f"{name} in {key}" for key, (_, body) in web_answers.items()
             for name, secret in secrets_of(secured_run).items() if secret in body]
    assert leaks == []


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(600)
def test_order_trace_answers_on_every_worker(secured_run: Chaos, web_answers: dict[str, tuple[int, bytes]]) -> None:
    """The trace a secret search must read: 200 from either worker, whichever owns the parts."""
    order = sorted(secured_run.created)[0]
    traces = {key: (code, body[:200]) for key, (code, body) in web_answers.items()
              if key.endswith(f"/orders/WH1/{order}/trace")}
    assert traces and all(code == 200 for code, _ in traces.values()), traces
    errors = {key: body[:200] for key, (code, body) in web_answers.items() if code >= 500}
    assert errors == {}


@pytest.mark.chaos
@pytest.mark.erp
@pytest.mark.kafka
@pytest.mark.apache_kafka
@pytest.mark.timeout(600)
def test_no_kafka_record_contains_a_secret_and_erp_dead_letters_are_scrubbed(secured_run: Chaos) -> None:
    topics = load(secured_run.cli_env()).topics
    leaks = []
    details = []
    for topic in (topics.events, topics.milestones, topics.exceptions, topics.dead_letters, topics.erp_dead_letters,
                  topics.source_cursor):
        for rec in verify.read_topic(secured_run.bootstrap, topic, idle_s=2):
            leaks += [f"{name} in {topic}@{rec.partition}:{rec.offset}"
                      for name, secret in secrets_of(secured_run).items() if secret in rec.value or secret in (rec.key or b"")]
            if topic == topics.erp_dead_letters:
                record = orjson.loads(rec.value)
                if "detail" in record:
                    details.append(record["detail"])
    assert leaks == []
    # The ERP did echo the key back: the dead letters carry its answer, with the key masked.
    assert details and all(ECHO_MATCH in d and "400" in d for d in details), details
    assert any("***" in d for d in details), f"the echoed key should show as *** in {details[0][:300]}"
