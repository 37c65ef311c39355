"""Settings: defaults, parsing, and bad values that name the setting."""
from __future__ import annotations

import pytest

from app import settings
from app.settings import SettingsError, load


def test_defaults_load() -> None:
    s = load({})
    assert s.topics.partitions == 4
    assert s.governance.hold_window_s == 900
    assert s.worker.store == "rocksdb://"
    assert not s.erp.api_key


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
    ],
)
def test_bad_value_names_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(env)
    assert names in str(err.value)


def test_secret_from_file_never_shown(tmp_path) -> None:
    key = tmp_path / "erp.key"
    key.write_text("s3cr3t-key\n")
    s = load({"ERP_API_KEY_FILE": str(key)})
    assert s.erp.api_key.value == "s3cr3t-key"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.erp.api_key)


def test_unreadable_secret_file_names_the_setting(tmp_path) -> None:
    with pytest.raises(SettingsError, match="ERP_API_KEY_FILE="):
        load({"ERP_API_KEY_FILE": str(tmp_path / "missing")})



def test_env_names_cover_secret_files() -> None:
    names = settings.env_names()
    assert "ERP_API_KEY_FILE" in names and "KAFKA_BOOTSTRAP_SERVERS" in names


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    undocumented = [name for name in settings.SPEC if f"`{name}`" not in readme]
    assert undocumented == []


@pytest.mark.parametrize(("level", "faust"), [("debug", "debug"), ("info", "info"), ("warning", "warn"), ("error", "error")])
def test_every_log_level_is_one_faust_accepts(level: str, faust: str) -> None:
    from faust.cli.base import LOGLEVELS  # what `faust worker --loglevel` accepts

    from app.worker import faust_argv

    argv = faust_argv(load({"LOG_LEVEL": level}))
    assert argv[argv.index("--loglevel") + 1] == faust and faust.upper() in LOGLEVELS  # case-insensitive choice
