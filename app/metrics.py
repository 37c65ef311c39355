"""Every Prometheus metric, declared once, in business terms (``syncgov_`` prefix, units in names)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

#: SLA buckets: seconds, from a few seconds to a day (minutes-to-hours business latencies).
SLA_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)

EVENTS = Counter("syncgov_events_total", "Input events admitted, by type and source.", ["type", "source"], registry=REGISTRY)
MILESTONES = Counter("syncgov_milestones_total", "Milestones emitted, by type.", ["type"], registry=REGISTRY)
SYNC_EXCEPTIONS = Counter(
    "syncgov_sync_exceptions_total", "SyncException milestones, by code.", ["code"], registry=REGISTRY
)
DEAD_LETTERS = Counter("syncgov_dead_letters_total", "Records sent to a dead-letter topic, by reason.", ["reason"], registry=REGISTRY)
EVENTS_PROCESSED = Counter(
    "syncgov_records_processed_total", "Input records consumed by the governance agent.", registry=REGISTRY
)
BATCH_SECONDS = Histogram(
    "syncgov_batch_duration_seconds",
    "Time to process one consumed batch through the core.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
LAST_COMMIT = Gauge(
    "syncgov_last_commit_timestamp_seconds", "Unix time of the last processed batch.", registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "syncgov_consumer_lag_records", "Records behind the partition end.", ["topic", "partition"], registry=REGISTRY
)
TABLE_KEYS = Gauge("syncgov_table_keys", "Keys held in a state table on this worker.", ["table"], registry=REGISTRY)
RECOVERY_IN_PROGRESS = Gauge(
    "syncgov_table_recovery_in_progress", "1 while tables recover from their changelogs.", registry=REGISTRY
)
WATERMARK = Gauge(
    "syncgov_watermark_timestamp_seconds", "Event-time watermark per input partition.", ["partition"], registry=REGISTRY
)
INVENTORY_WATERMARK = Gauge(
    "syncgov_inventory_watermark_timestamp_seconds",
    "The inventory stage's watermark per stock partition (the slowest non-idle input partition).",
    ["partition"],
    registry=REGISTRY,
)

ERP_CALLS = Counter(
    "syncgov_erp_calls_total",
    "ERP sink outcomes, by milestone type and outcome (posted, already_done, skipped, deduplicated, "
    "transient_error, deferred, permanent_error, parked, held, undecodable).",
    ["milestone_type", "outcome"],
    registry=REGISTRY,
)
#: Every ERP client's figures carry its role: ``sink`` (the worker's ERP sink), ``source`` (the
#: order-release connector) or ``reconcile`` (reconciliation), so one never overwrites another's.
ERP_ROLES = ("sink", "source", "reconcile")
ERP_RATE = Gauge(
    "syncgov_erp_rate_limit_per_second", "Current adaptive ERP request rate of a client, by role.", ["role"],
    registry=REGISTRY,
)
ERP_QUOTA_SHARE = Gauge(
    "syncgov_erp_quota_share_per_second",
    "A client's share of the ERP quota (the ceiling of its adaptive rate), by role; with ERP_QUOTA_PER_S the "
    "sink's share follows the partitions this worker owns.",
    ["role"],
    registry=REGISTRY,
)
ERP_REQUESTS = Counter(
    "syncgov_erp_requests_total",
    "ERP HTTP requests sent, by client role and answer (2xx, 4xx, 5xx, throttled, timeout, error).",
    ["role", "answer"],
    registry=REGISTRY,
)
ERP_THROTTLED = Counter(
    "syncgov_erp_throttled_total", "ERP throttle answers (429 or configured), by client role.", ["role"],
    registry=REGISTRY,
)
ERP_RETRY_AFTER = Counter(
    "syncgov_erp_retry_after_seconds_total", "Seconds waited because the ERP said Retry-After, by client role.",
    ["role"], registry=REGISTRY,
)
ERP_BACKLOG = Gauge(
    "syncgov_erp_backlog_milestones",
    "Milestones not yet posted to the ERP in this worker's partitions (their current end offsets minus the "
    "sink's committed offsets, refreshed every few seconds).",
    registry=REGISTRY,
)
ERP_BACKLOG_AGE = Gauge(
    "syncgov_erp_backlog_oldest_age_seconds",
    "Age of the oldest milestone not yet posted (0 when none), refreshed every few seconds.", registry=REGISTRY
)
ERP_HELD = Gauge(
    "syncgov_erp_held_milestones",
    "Milestones held behind a dead-lettered or parked milestone of their document, until it is re-driven.",
    registry=REGISTRY,
)
ERP_BLOCKED_DOCUMENTS = Gauge(
    "syncgov_erp_blocked_documents",
    "Documents stopped at a dead-lettered or parked milestone (waiting for `syncgov dlq replay`), by reason.",
    ["reason"],
    registry=REGISTRY,
)
# The ERP's capacity: how many documents each governed request carries.
ERP_BATCH_RECORDS = Histogram(
    "syncgov_erp_batch_records",
    "Records (documents, or milestones of a bulk route) carried by one ERP request, by kind of request "
    "(e.g. `read stock.shipment.out`, `button stock.shipment.out.pick`, `create ir.note`, `bulk POST`).",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=REGISTRY,
)
ERP_BATCH_SIZE = Gauge(
    "syncgov_erp_batch_size_limit",
    "Most records the next ERP request of this kind may carry now (adapts to the ERP's answer time, "
    "at most `ERP_BATCH_MAX`).",
    ["kind"],
    registry=REGISTRY,
)
ERP_BATCH_RECORD_OUTCOMES = Counter(
    "syncgov_erp_batch_record_outcomes_total",
    "Per-record outcomes inside batched ERP requests, by kind of request and outcome (done, refused, "
    "not_ready, transient, fenced): one record refused never fails the others.",
    ["kind", "outcome"],
    registry=REGISTRY,
)
ERP_BATCH_SPLITS = Counter(
    "syncgov_erp_batch_splits_total",
    "Batched ERP requests refused as a whole and split in two to isolate the record at fault, by kind.",
    ["kind"],
    registry=REGISTRY,
)
ERP_COALESCED = Counter(
    "syncgov_erp_coalesced_milestones_total",
    "Milestones posted on the document state their predecessor's step just left, without a read of their "
    "own (a document's waiting milestones in the fewest ERP calls), by milestone type.",
    ["milestone_type"],
    registry=REGISTRY,
)

SLA_RELEASE_TO_ACCEPTED = Histogram(
    "syncgov_order_release_to_accepted_seconds", "Order release to OrderAccepted.", buckets=SLA_BUCKETS, registry=REGISTRY
)
SLA_RELEASE_TO_PICKED = Histogram(
    "syncgov_order_release_to_picked_seconds", "Order release to OrderPicked (pick confirmation latency).",
    buckets=SLA_BUCKETS, registry=REGISTRY,
)
SLA_PACKED_TO_SHIPPED = Histogram(
    "syncgov_order_packed_to_shipped_seconds", "OrderPacked to ShipmentConfirmed.", buckets=SLA_BUCKETS, registry=REGISTRY
)
SLA_SHIPPED_TO_POSTED = Histogram(
    "syncgov_shipment_confirmed_to_posted_seconds",
    "ShipmentConfirmed to posted in the ERP (shipment posting completion).",
    buckets=SLA_BUCKETS, registry=REGISTRY,
)
SLA_RETURN_TO_POSTED = Histogram(
    "syncgov_return_received_to_posted_seconds", "ReturnReceived to posted in the ERP (return-to-credit).",
    buckets=SLA_BUCKETS, registry=REGISTRY,
)
SYNC_DRIFT = Gauge(
    "syncgov_sync_drift_documents",
    "Documents out of sync between the ERP and the milestone ledger, by kind.",
    ["kind"],
    registry=REGISTRY,
)
SYNC_DRIFT_OLDEST_AGE = Gauge(
    "syncgov_sync_drift_oldest_age_seconds",
    "Age of the oldest document out of sync, by kind (0 when none).",
    ["kind"],
    registry=REGISTRY,
)
SYNC_DRIFT_EXCEPTIONS = Counter(
    "syncgov_sync_drift_exceptions_total",
    "SyncDrift records published for drift older than the reconciliation window, by kind.",
    ["kind"],
    registry=REGISTRY,
)
RECONCILE_LAST_SUCCESS = Gauge(
    "syncgov_reconcile_last_success_timestamp_seconds", "Unix time of the last completed reconciliation.",
    registry=REGISTRY,
)

RECONCILE_RUNS = Counter(
    "syncgov_reconcile_runs_total", "Reconciliation runs of this process, by outcome (success, failure).",
    ["outcome"], registry=REGISTRY,
)

SOURCE_LAST_POLL = Gauge(
    "syncgov_source_last_poll_success_timestamp_seconds",
    "Unix time of the order-release connector's last completed ERP poll (0: none yet).", registry=REGISTRY,
)
SOURCE_POLL_FAILURES = Counter(
    "syncgov_source_poll_failures_total", "ERP polls of the order-release connector that failed (retried).",
    registry=REGISTRY,
)
SOURCE_EVENTS = Counter(
    "syncgov_source_events_published_total", "Order events the order-release connector published.",
    registry=REGISTRY,
)
