"""The one settings object, read from the environment in one place.

Every setting has an environment variable and a default; a bad value stops
start-up with :class:`SettingsError` naming the variable and the value.
Secrets (ERP key, Kafka password) may come from ``<VAR>_FILE`` (a mounted
secret file) instead of the variable itself, and are never printed.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in repr, str or logs."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)" if self.value else "Secret()"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str  # empty: start the embedded broker
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: Secret
    ssl_cafile: str
    ssl_certfile: str
    ssl_keyfile: str
    session_timeout_s: float
    producer_max_batch_size: int
    producer_linger_ms: float


@dataclass(frozen=True)
class TopicSettings:
    events: str
    milestones: str
    dead_letters: str
    erp_dead_letters: str
    exceptions: str
    source_cursor: str
    stock: str  # internal: StockAdjusted re-keyed by (warehouse_id, sku, location)
    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class GovernanceSettings:
    dedup_retention_s: float
    hold_window_s: float
    window_size_s: float
    window_grace_s: float
    future_tolerance_s: float


@dataclass(frozen=True)
class WorkerSettings:
    app_id: str
    store: str  # 'rocksdb://' or 'memory://'
    data_dir: Path
    web_host: str
    web_port: int
    canonical_url: str  # how other workers reach this one (trace routing)
    standby_replicas: int
    batch_size: int
    batch_within_s: float
    idle_partition_s: float  # an input partition with nothing to read this long stops holding windows
    recovery_consistency_check: bool  # Faust's stored-offset <= changelog-end check (false on Tansu)
    admin_token: Secret  # empty: mutating endpoints are off
    log_level: str


@dataclass(frozen=True)
class ErpSettings:
    sink_enabled: bool  # False: milestones stay in Kafka, nothing is posted
    adapter: str  # 'tryton' or 'http'
    base_url: str
    database: str
    api_key: Secret
    rate_per_s: float
    burst: int
    max_in_flight: int
    timeout_s: float
    max_retries: int
    backoff_base_s: float
    backoff_cap_s: float
    throttle_statuses: tuple[int, ...]
    http_routes: str  # generic adapter: JSON map milestone type -> "METHOD path"
    http_auth_header: str
    http_auth_scheme: str
    source_poll_s: float
    source_overlap_s: float
    source_page_size: int
    source_rate_per_s: float


@dataclass(frozen=True)
class ReconcileSettings:
    window_s: float  # drift older than this becomes a SyncDrift record
    interval_s: float  # the worker's reconciliation timer
    lookback_s: float  # milestones older than this are not compared
    rate_per_s: float  # reconciliation's share of the ERP quota
    page_size: int  # documents per ERP read


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    topics: TopicSettings
    governance: GovernanceSettings
    worker: WorkerSettings
    erp: ErpSettings
    reconcile: ReconcileSettings


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


def _positive(conv: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = conv(raw)
        if value <= 0:  # type: ignore[operator]
            raise ValueError("must be > 0")
        return value

    return parse


def _non_negative(conv: Callable[[str], T]) -> Callable[[str], T]:
    def parse(raw: str) -> T:
        value = conv(raw)
        if value < 0:  # type: ignore[operator]
            raise ValueError("must be >= 0")
        return value

    return parse


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return raw

    return parse


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number 0..65535")
    return value


def _statuses(raw: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in raw.split(",") if part.strip())
    if not values or any(not 400 <= v <= 599 for v in values):
        raise ValueError("must be a comma-separated list of HTTP status codes 400..599")
    return values


def _store(raw: str) -> str:
    if raw not in {"rocksdb://", "memory://"}:
        raise ValueError("must be rocksdb:// or memory://")
    return raw


#: Every setting: env var -> (default, parser). The manifests test reads this.
SPEC: dict[str, tuple[str, Callable[[str], Any]]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("", str),
    "KAFKA_SECURITY_PROTOCOL": ("PLAINTEXT", _one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")),
    "KAFKA_SASL_MECHANISM": ("PLAIN", _one_of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")),
    "KAFKA_SASL_USERNAME": ("", str),
    "KAFKA_SASL_PASSWORD": ("", str),
    "KAFKA_SSL_CAFILE": ("", str),
    "KAFKA_SSL_CERTFILE": ("", str),
    "KAFKA_SSL_KEYFILE": ("", str),
    "KAFKA_SESSION_TIMEOUT_S": ("6", _positive(float)),
    "KAFKA_PRODUCER_MAX_BATCH_SIZE": ("262144", _positive(int)),
    "KAFKA_PRODUCER_LINGER_MS": ("0", _non_negative(float)),
    "TOPIC_EVENTS": ("syncgov.events", str),
    "TOPIC_MILESTONES": ("syncgov.milestones", str),
    "TOPIC_DEAD_LETTERS": ("syncgov.dead-letters", str),
    "TOPIC_ERP_DEAD_LETTERS": ("syncgov.erp-dead-letters", str),
    "TOPIC_EXCEPTIONS": ("syncgov.exceptions", str),
    "TOPIC_SOURCE_CURSOR": ("syncgov.source-cursor", str),
    "TOPIC_STOCK": ("syncgov.stock-by-location", str),
    "TOPIC_PARTITIONS": ("4", _positive(int)),
    "TOPIC_REPLICATION_FACTOR": ("1", _positive(int)),
    "DEDUP_RETENTION_S": ("86400", _positive(float)),
    "HOLD_WINDOW_S": ("900", _positive(float)),
    "WINDOW_SIZE_S": ("300", _positive(float)),
    "WINDOW_GRACE_S": ("60", _non_negative(float)),
    "FUTURE_TOLERANCE_S": ("300", _non_negative(float)),
    "WORKER_APP_ID": ("syncgov", str),
    "WORKER_STORE": ("rocksdb://", _store),
    "WORKER_DATA_DIR": ("./var/worker", str),
    "WORKER_WEB_HOST": ("127.0.0.1", str),
    "WORKER_WEB_PORT": ("6066", _port),
    "WORKER_CANONICAL_URL": ("", str),
    "WORKER_STANDBY_REPLICAS": ("0", _non_negative(int)),
    "WORKER_BATCH_SIZE": ("20000", _positive(int)),
    "WORKER_BATCH_WITHIN_S": ("0.1", _positive(float)),
    "WORKER_IDLE_PARTITION_S": ("30", _positive(float)),
    "WORKER_RECOVERY_CONSISTENCY_CHECK": ("false", _parse_bool),
    "WORKER_ADMIN_TOKEN": ("", str),
    "LOG_LEVEL": ("info", _one_of("debug", "info", "warning", "error")),
    "ERP_SINK_ENABLED": ("true", _parse_bool),
    "ERP_ADAPTER": ("tryton", _one_of("tryton", "http")),
    "ERP_BASE_URL": ("http://127.0.0.1:18080", str),
    "ERP_DATABASE": ("erp", str),
    "ERP_API_KEY": ("", str),
    "ERP_RATE_PER_S": ("5", _positive(float)),
    "ERP_BURST": ("5", _positive(int)),
    "ERP_MAX_IN_FLIGHT": ("4", _positive(int)),
    "ERP_TIMEOUT_S": ("10", _positive(float)),
    "ERP_MAX_RETRIES": ("8", _non_negative(int)),
    "ERP_BACKOFF_BASE_S": ("0.5", _positive(float)),
    "ERP_BACKOFF_CAP_S": ("30", _positive(float)),
    "ERP_THROTTLE_STATUSES": ("429", _statuses),
    "ERP_HTTP_ROUTES": ("", str),
    "ERP_HTTP_AUTH_HEADER": ("Authorization", str),
    "ERP_HTTP_AUTH_SCHEME": ("Bearer", str),
    "ERP_SOURCE_POLL_S": ("5", _positive(float)),
    "ERP_SOURCE_OVERLAP_S": ("5", _non_negative(float)),
    "ERP_SOURCE_PAGE_SIZE": ("100", _positive(int)),
    "ERP_SOURCE_RATE_PER_S": ("1", _positive(float)),
    "RECONCILE_WINDOW_S": ("900", _non_negative(float)),
    "RECONCILE_INTERVAL_S": ("60", _positive(float)),
    "RECONCILE_LOOKBACK_S": ("86400", _positive(float)),
    "RECONCILE_RATE_PER_S": ("0.5", _positive(float)),
    "RECONCILE_PAGE_SIZE": ("100", _positive(int)),
}

#: Settings that may be given as a file path in ``<NAME>_FILE``.
SECRETS = frozenset({"KAFKA_SASL_PASSWORD", "ERP_API_KEY", "WORKER_ADMIN_TOKEN"})


def _read(env: Mapping[str, str], name: str) -> Any:
    default, parse = SPEC[name]
    raw = env.get(name)
    if name in SECRETS and not raw and env.get(f"{name}_FILE"):
        path = env[f"{name}_FILE"]
        try:
            raw = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"{name}_FILE={path!r}: cannot read the secret file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise SettingsError(f"{name}_FILE={path!r}: the secret file is not UTF-8 text") from None
    if raw is None:
        raw = default
    try:
        value = parse(raw)
    except ValueError as exc:
        if name in SECRETS:  # a parser's message may quote its input: say nothing of the value
            raise SettingsError(f"{name}=***: not a valid value") from None
        raise SettingsError(f"{name}={raw!r}: {exc}") from None
    return Secret(value) if name in SECRETS else value


def _default_url(host: str, port: int) -> str:
    """This worker's URL for its peers: the bind address, or the host name when bound to all."""
    return f"http://{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`SettingsError` on the first bad one."""
    env = os.environ if env is None else env
    v = {name: _read(env, name) for name in SPEC}
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=v["KAFKA_BOOTSTRAP_SERVERS"],
            security_protocol=v["KAFKA_SECURITY_PROTOCOL"],
            sasl_mechanism=v["KAFKA_SASL_MECHANISM"],
            sasl_username=v["KAFKA_SASL_USERNAME"],
            sasl_password=v["KAFKA_SASL_PASSWORD"],
            ssl_cafile=v["KAFKA_SSL_CAFILE"],
            ssl_certfile=v["KAFKA_SSL_CERTFILE"],
            ssl_keyfile=v["KAFKA_SSL_KEYFILE"],
            session_timeout_s=v["KAFKA_SESSION_TIMEOUT_S"],
            producer_max_batch_size=v["KAFKA_PRODUCER_MAX_BATCH_SIZE"],
            producer_linger_ms=v["KAFKA_PRODUCER_LINGER_MS"],
        ),
        topics=TopicSettings(
            events=v["TOPIC_EVENTS"],
            milestones=v["TOPIC_MILESTONES"],
            dead_letters=v["TOPIC_DEAD_LETTERS"],
            erp_dead_letters=v["TOPIC_ERP_DEAD_LETTERS"],
            exceptions=v["TOPIC_EXCEPTIONS"],
            source_cursor=v["TOPIC_SOURCE_CURSOR"],
            stock=v["TOPIC_STOCK"],
            partitions=v["TOPIC_PARTITIONS"],
            replication_factor=v["TOPIC_REPLICATION_FACTOR"],
        ),
        governance=GovernanceSettings(
            dedup_retention_s=v["DEDUP_RETENTION_S"],
            hold_window_s=v["HOLD_WINDOW_S"],
            window_size_s=v["WINDOW_SIZE_S"],
            window_grace_s=v["WINDOW_GRACE_S"],
            future_tolerance_s=v["FUTURE_TOLERANCE_S"],
        ),
        worker=WorkerSettings(
            app_id=v["WORKER_APP_ID"],
            store=v["WORKER_STORE"],
            data_dir=Path(v["WORKER_DATA_DIR"]),
            web_host=v["WORKER_WEB_HOST"],
            web_port=v["WORKER_WEB_PORT"],
            canonical_url=v["WORKER_CANONICAL_URL"] or _default_url(v["WORKER_WEB_HOST"], v["WORKER_WEB_PORT"]),
            standby_replicas=v["WORKER_STANDBY_REPLICAS"],
            batch_size=v["WORKER_BATCH_SIZE"],
            batch_within_s=v["WORKER_BATCH_WITHIN_S"],
            idle_partition_s=v["WORKER_IDLE_PARTITION_S"],
            recovery_consistency_check=v["WORKER_RECOVERY_CONSISTENCY_CHECK"],
            admin_token=v["WORKER_ADMIN_TOKEN"],
            log_level=v["LOG_LEVEL"],
        ),
        erp=ErpSettings(
            sink_enabled=v["ERP_SINK_ENABLED"],
            adapter=v["ERP_ADAPTER"],
            base_url=v["ERP_BASE_URL"].rstrip("/"),
            database=v["ERP_DATABASE"],
            api_key=v["ERP_API_KEY"],
            rate_per_s=v["ERP_RATE_PER_S"],
            burst=v["ERP_BURST"],
            max_in_flight=v["ERP_MAX_IN_FLIGHT"],
            timeout_s=v["ERP_TIMEOUT_S"],
            max_retries=v["ERP_MAX_RETRIES"],
            backoff_base_s=v["ERP_BACKOFF_BASE_S"],
            backoff_cap_s=v["ERP_BACKOFF_CAP_S"],
            throttle_statuses=v["ERP_THROTTLE_STATUSES"],
            http_routes=v["ERP_HTTP_ROUTES"],
            http_auth_header=v["ERP_HTTP_AUTH_HEADER"],
            http_auth_scheme=v["ERP_HTTP_AUTH_SCHEME"],
            source_poll_s=v["ERP_SOURCE_POLL_S"],
            source_overlap_s=v["ERP_SOURCE_OVERLAP_S"],
            source_page_size=v["ERP_SOURCE_PAGE_SIZE"],
            source_rate_per_s=v["ERP_SOURCE_RATE_PER_S"],
        ),
        reconcile=ReconcileSettings(
            window_s=v["RECONCILE_WINDOW_S"],
            interval_s=v["RECONCILE_INTERVAL_S"],
            lookback_s=v["RECONCILE_LOOKBACK_S"],
            rate_per_s=v["RECONCILE_RATE_PER_S"],
            page_size=v["RECONCILE_PAGE_SIZE"],
        ),
    )
    _check_consistency(settings)
    return settings


def _check_consistency(s: Settings) -> None:
    if s.erp.backoff_cap_s < s.erp.backoff_base_s:
        raise SettingsError(
            f"ERP_BACKOFF_CAP_S={s.erp.backoff_cap_s}: must be >= ERP_BACKOFF_BASE_S={s.erp.backoff_base_s}"
        )
    if s.kafka.security_protocol.startswith("SASL") and not s.kafka.sasl_username:
        raise SettingsError("KAFKA_SASL_USERNAME='': required when KAFKA_SECURITY_PROTOCOL uses SASL")
    if s.erp.adapter == "http" and not s.erp.http_routes:
        raise SettingsError("ERP_HTTP_ROUTES='': required when ERP_ADAPTER=http")


def env_names() -> frozenset[str]:
    """Every environment variable the app reads (secrets also as ``<NAME>_FILE``)."""
    return frozenset(SPEC) | frozenset(f"{name}_FILE" for name in SECRETS)


