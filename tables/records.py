"""Mapping between one partition's core state and the records of the state table.

Pure (no Faust): the agent hands it raw events and gets back outputs and the table
writes of the batch. Every record carries the input offset of the batch that wrote
it and the value it replaced; the partition's meta record is written last. On load,
a record newer than the meta (a batch cut short by a crash) is rolled back to the
value it replaced, so the state is exactly "everything up to the meta offset" and
redelivered events up to that offset are skipped. Outputs are flushed before the
state is written: a crash re-emits milestones (same ids), it never loses one.
"""
from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableMapping
from typing import Any, Final, Generic, Protocol, TypeVar, cast

import orjson

from app.core import Engine
from app.core.engine import Output
from app.core.inventory import StockKey
from app.core.model import CoreSettings
from app.core.orders import OrderState
from app.core.stock import InventoryStage
from tables import lineage

SEP: Final = "\x1f"
ORDERS: Final = "o"
WINDOWS: Final = "w"
RETURNS: Final = "r"
SEEN: Final = "s"
REJECTED: Final = "x"
META: Final = "m"
LINEAGE: Final = "l"
#: The fence record: the epoch of the worker that took the partition over (see
#: ``app/runtime/ownership.py``); every other record carries its writer's epoch as "e".
FENCE: Final = "f"
_NULL: Final = b"null"
_KEYED = (ORDERS, RETURNS)  # an input partition's keyed stores (windows: InventoryState)

#: A table write: (key, value) with value None for a delete.
Write = tuple[bytes, bytes | None]


_K = TypeVar("_K", bound=Hashable)


class Tracked(dict[_K, Any]):
    """A dict that remembers which keys were set or deleted since the last flush."""

    __slots__ = ("dirty",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.dirty: set[_K] = set()

    def __setitem__(self, key: _K, value: Any) -> None:
        super().__setitem__(key, value)
        self.dirty.add(key)

    def __delitem__(self, key: _K) -> None:
        super().__delitem__(key)
        self.dirty.add(key)

    def pop(self, key: _K, *default: Any) -> Any:
        self.dirty.add(key)
        return super().pop(key, *default)


class TrackedSet(set):  # type: ignore[type-arg]
    """A set that remembers what was added since the last flush."""

    __slots__ = ("added",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.added: list[Hashable] = []

    def add(self, item: Hashable) -> None:
        if item not in self:
            self.added.append(item)
        super().add(item)


_UNREAD: Final = object()  # a LazyStore key not in its cache yet


class LazyStore(MutableMapping[tuple[Any, ...], Any]):
    """A keyed store of one partition and kind (orders) that reads a key's stored record
    from the table the first time it is used, instead of decoding every key at load: a
    large state is ready at once, and only the orders that events touch are decoded.

    Like ``Tracked``, it remembers the keys set or deleted since the last flush
    (``dirty``). A key's value is decoded from its stored record with the rule of
    ``committed_records`` *as of the offset the state was loaded at*: a record not written
    since the load is the one that was there then, and one written since is in the cache
    (every set key is). ``len`` is kept as a count (the stored keys present at load, plus
    the changes); iteration reads every stored key (``scan``) and is not for hot paths.
    """

    __slots__ = ("_cache", "_count", "_kind", "_lookup", "_offset", "_partition", "_scan", "dirty")

    def __init__(
        self,
        partition: int,
        kind: str,
        offset: int,
        lookup: Callable[[bytes], bytes | None],
        scan: Callable[[], Iterable[tuple[bytes, bytes]]],
        count: int,
        loaded: dict[tuple[Any, ...], Any] | None = None,
    ) -> None:
        self._partition = partition
        self._kind = kind
        self._offset = offset
        self._lookup = lookup
        self._scan = scan
        self._count = count
        #: Decoded values by key; None: no such key (not stored, or deleted).
        self._cache: dict[tuple[Any, ...], Any] = dict(loaded or {})
        self.dirty: set[tuple[Any, ...]] = set()

    def _value(self, key: tuple[Any, ...]) -> Any:
        value = self._cache.get(key, _UNREAD)
        return self._load(key) if value is _UNREAD else value

    def _load(self, key: tuple[Any, ...]) -> Any:
        """A key not in the cache yet: read from the table, decoded, cached (None: absent)."""
        raw = self._lookup(table_key(self._partition, self._kind, key))
        value = None
        if raw is not None:
            rec = orjson.loads(raw)
            value = rec["v"] if rec["o"] <= self._offset else rec["p"]
            if value is not None:
                value = _decode_value(self._kind, value)
        self._cache[key] = value
        return value

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        value = self._cache.get(key, _UNREAD)  # the cache inline: most keys an event touches are in it
        if value is _UNREAD:
            value = self._load(key)
        return default if value is None else value

    def __getitem__(self, key: tuple[Any, ...]) -> Any:
        value = self._value(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        try:
            return self._value(key) is not None  # type: ignore[arg-type]
        except TypeError:  # unhashable
            return False

    def __setitem__(self, key: tuple[Any, ...], value: Any) -> None:
        if value is None:
            raise ValueError("a LazyStore holds no None values (delete the key)")
        cache = self._cache
        old = cache.get(key, _UNREAD)
        if old is _UNREAD:
            old = self._load(key)
        if old is None:
            self._count += 1
        cache[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: tuple[Any, ...]) -> None:
        if self._value(key) is None:
            raise KeyError(key)
        self._cache[key] = None
        self._count -= 1
        self.dirty.add(key)

    def pop(self, key: tuple[Any, ...], *default: Any) -> Any:
        self.dirty.add(key)
        value = self._value(key)
        if value is None:
            if default:
                return default[0]
            raise KeyError(key)
        self._cache[key] = None
        self._count -= 1
        return value

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        start = prefix(self._partition) + self._kind.encode() + SEP.encode()
        stored = [tuple(_parse_key(key)[1]) for key, _ in self._scan() if key.startswith(start)]
        cached = set(self._cache)
        found = [key for key in stored if key not in cached and self._value(key) is not None]
        found += [key for key in cached if self._cache[key] is not None]
        yield from found


def prefix(partition: int) -> bytes:
    return f"{partition}{SEP}".encode()


def key_head(partition: int, kind: str) -> bytes:
    """``<partition>SEP<kind>SEP``: what every key of one kind in one partition starts with."""
    return prefix(partition) + kind.encode() + SEP.encode()


def table_key(partition: int, kind: str, parts: Iterable[Any] = ()) -> bytes:
    """``<partition>SEP<kind>SEP<JSON list of the key's parts>``."""
    return key_head(partition, kind) + orjson.dumps(list(parts))


def fence_key(partition: int) -> bytes:
    return table_key(partition, FENCE)


def fence_write(partition: int, epoch: int) -> Write:
    """The record a worker writes first when it takes ``partition`` over."""
    return fence_key(partition), orjson.dumps({"e": epoch})


#: A top-level ``"e"`` that is its object's last member, as orjson writes every state
#: record (``{..., "e": <epoch>}``): the final ``}`` closes the top-level object, and a
#: ``"`` right after ``{`` or ``,`` opens a key (inside a string it would be escaped).
_EPOCH_TAIL = re.compile(rb'[{,]"e":(-?(?:0|[1-9][0-9]{0,17}))}\Z')


def record_epoch(value: bytes | None) -> int | None:
    """The fencing epoch a state record was written under (``"e"``), if any. Decodes the
    record only when the quick reads cannot tell (a restore reads every record)."""
    if not value or value[:1] != b"{":
        return None
    if b'"e"' not in value and b"\\u" not in value:
        return None  # no key "e" at all (nor one spelt with escapes)
    tail = _EPOCH_TAIL.search(value, max(0, len(value) - 32))
    if tail is not None:
        return int(tail[1])
    try:
        epoch = orjson.loads(value).get("e")
    except orjson.JSONDecodeError:
        return None
    return epoch if isinstance(epoch, int) else None


def take_over_epoch(generation: int, fences: Iterable[bytes | None]) -> int:
    """The epoch to take partitions over with: the group's generation, or one more than the
    highest epoch their stored fence records hold if that is not below it. A generation is
    not monotonic across a group's life (Apache Kafka 4 starts a deleted empty group again at
    1); the fences must be: each take-over fences higher than the last one stored."""
    stored = [epoch for epoch in map(record_epoch, fences) if epoch is not None]
    return max(generation, max(stored) + 1) if stored else generation


def _parse_key(key: bytes) -> tuple[str, list[Any]]:
    _, kind, parts = key.split(SEP.encode(), 2)
    return kind.decode(), orjson.loads(parts)


def _encode_value(kind: str, value: Any) -> Any:
    if kind == ORDERS:
        return value.to_record()
    if kind == WINDOWS:
        return [[start, win] for start, win in value.items()]
    return value


def _decode_value(kind: str, value: Any) -> Any:
    if kind == ORDERS:
        return OrderState.from_record(value)
    if kind == WINDOWS:
        return {start: win for start, win in value}
    return value


V = TypeVar("V")


class Written(Generic[V]):
    """What this partition's flushes last wrote for each key: for a keyed store, the value
    encoded (``keyed_writes``' ``"v"``); for an order's lineage, its trail. Once that flush
    has committed it is the key's value as of the committed offset, so the next flush that
    changes the key takes it from here instead of reading and decoding the stored record.
    Valid only while every flush of its owner has committed: a stage drops a partition's
    state (and so this) after a failed batch, and builds it anew on assignment. Bounded:
    the keys written longest ago are forgotten past ``limit`` (a forgotten key is read from
    the store)."""

    __slots__ = ("_values", "limit")

    def __init__(self, limit: int = 20_000) -> None:
        self._values: dict[bytes, V] = {}
        self.limit = limit

    def get(self, tkey: bytes) -> V | None:
        return self._values.get(tkey)

    def put(self, tkey: bytes, value: V) -> None:
        values = self._values
        values.pop(tkey, None)  # re-inserted last: the dict is in order of last write
        values[tkey] = value
        if len(values) > self.limit:
            for old in list(itertools.islice(values, len(values) - self.limit)):
                del values[old]

    def __len__(self) -> int:
        return len(self._values)


#: Order trails a partition's state keeps as it last wrote them (``PartitionState.trails``):
#: an order touched by consecutive batches is then neither read back nor decoded. A trail
#: is up to ``lineage.MAX_ENTRIES`` small dicts: the worker bench measured ~7.5 KiB a kept
#: trail (VmHWM +35-40 MiB for ~5,100 orders), so this bound is ~7.5 MiB a partition.
TRAILS_KEPT: Final = 1_000


def keyed_writes(
    partition: int,
    kind: str,
    store: Tracked[tuple[Any, ...]] | LazyStore,
    offset: int,
    committed: int,
    previous: Callable[[bytes], bytes | None],
    epoch: int = 0,
    written: Written[bytes] | None = None,
) -> Iterator[Write]:
    """One record per key of ``store`` changed since the last flush: its new value and the
    value it replaces as of the ``committed`` offset (for the rollback on load), the latter
    from ``written`` when it has the key, else read from the stored record."""
    head = key_head(partition, kind)  # once per flush, not per key
    dumps, loads = orjson.dumps, orjson.loads
    # The record is ``{"o":<offset>,"v":<value>,"p":<prior>,"e":<epoch>}``, the bytes orjson
    # writes for that dict with the values as fragments, joined without building the dict.
    opening, closing = b'{"o":%d,"v":' % offset, b',"e":%d}' % epoch
    for key in store.dirty:
        tkey = head + dumps(key)  # a tuple: the JSON list table_key writes
        value = store.get(key)
        encoded = _NULL if value is None else dumps(_encode_value(kind, value))
        prior = None if written is None else written.get(tkey)
        if prior is None:
            prior = _NULL
            stored = previous(tkey)
            if stored is not None:
                rec = loads(stored)
                prior = dumps(rec["v"] if rec["o"] <= committed else rec["p"])
        if written is not None:
            written.put(tkey, encoded)
        yield tkey, opening + encoded + b',"p":' + prior + closing


def committed_records(
    records: Iterable[tuple[bytes, bytes]], offset: int
) -> Iterator[tuple[str, list[Any], Any]]:
    """(kind, key parts, value) of the keyed records as of ``offset``: a record written
    by a later (unfinished) batch gives the value it replaced; deleted keys are skipped."""
    for key, raw in records:
        kind, parts = _parse_key(key)
        rec = orjson.loads(raw)
        value = rec["v"] if rec["o"] <= offset else rec["p"]
        if value is not None:
            yield kind, parts, _decode_value(kind, value)


class PartitionSource(Protocol):
    """A partition's stored records, for a lazy load (``PartitionState(source=...)``)."""

    def records(self) -> Iterable[tuple[bytes, bytes]]:
        """Every stored record of the partition (each key once)."""

    def get(self, key: bytes) -> bytes | None:
        """One key's stored record."""


#: A ``"held"`` or ``"waiting"`` not followed by ``:[]`` (as orjson writes an empty list).
_MAYBE_PENDING = re.compile(rb'"(?:held|waiting)"(?!:\[\])')


def maybe_pending(raw: bytes) -> bool:
    """Whether a stored order record may hold events or wait for its packing (then its
    order has a hold deadline). False only when each of its ``"held"`` and ``"waiting"``
    fields (in the value and in the value it replaced) is ``[]`` as orjson writes it; so
    a record written any other way counts as pending (it is decoded at load)."""
    return _MAYBE_PENDING.search(raw) is not None


def committed_present(raw: bytes, offset: int) -> bool:
    """Whether a keyed record has a value as of ``offset`` (``committed_records``' rule),
    read without decoding the record when it starts as ``keyed_writes`` writes it."""
    if raw.startswith(b'{"o":'):
        comma = raw.find(b",", 5)
        try:
            written = int(raw[5:comma])
        except ValueError:
            written = None
        if written is not None and written <= offset and raw.startswith(b'"v":', comma + 1):
            return not raw.startswith(b"null", comma + 5)
    rec = orjson.loads(raw)
    return (rec["v"] if rec["o"] <= offset else rec["p"]) is not None


class PartitionState:
    """One input partition's engine, its table-backed stores and its commit point.

    With a ``source`` (the worker), orders are read lazily (``LazyStore``): the load
    decodes only the orders that may hold events or wait (the engine's hold deadlines),
    counts the others, and the rest are decoded when an event first touches them. With
    ``records`` alone every order is decoded at load."""

    def __init__(
        self,
        partition: int,
        settings: CoreSettings,
        clock: Callable[[], int] | None,
        records: Iterable[tuple[bytes, bytes]] = (),
        source: PartitionSource | None = None,
    ) -> None:
        self.partition = partition
        #: The fencing epoch this worker writes under (set when it takes the partition over).
        self.epoch = 0
        # keys by kind: orders OrderKey, returns (warehouse_id, rma_id, sku), seen the dedup key
        stores: dict[str, Tracked[Any] | LazyStore] = {kind: Tracked() for kind in (*_KEYED, SEEN)}
        rejected = TrackedSet()
        meta: dict[str, Any] = {"o": -1, "watermark": None, "seq": 0}
        logs: list[tuple[bytes, dict[str, Any]]] = []
        keyed: list[tuple[bytes, bytes]] = []
        if source is not None:
            records = source.records()
        orders_start = table_key(partition, ORDERS)[:-2]  # <partition>SEP o SEP
        meta_read = False
        present = 0  # stored orders with a value, not decoded (lazy)
        uncounted: list[bytes] = []  # order records seen before the meta (not in a sorted store)
        for key, raw in records:
            if source is not None and key.startswith(orders_start) and not maybe_pending(raw):
                if meta_read:
                    present += committed_present(raw, meta["o"])
                else:
                    uncounted.append(raw)
                continue
            kind, _ = _parse_key(key)
            if kind in (LINEAGE, FENCE):
                continue  # the trail is read by the trace; the fence by the restore
            if kind == META:
                meta = orjson.loads(raw)
                meta_read = True
            elif kind in (SEEN, REJECTED):
                logs.append((key, orjson.loads(raw)))
            else:
                keyed.append((key, raw))
        self.offset: int = meta["o"]
        self.committed_watermark: int | None = meta["watermark"]
        self.seq: int = meta["seq"]
        #: Dedup log records in write order: (latest base time in it, table key), for expiry.
        self.seen_logs: deque[tuple[int, bytes]] = deque()
        loaded: dict[Any, Any] = {}
        for kind, parts, value in committed_records(keyed, self.offset):
            if source is not None and kind == ORDERS:
                loaded[tuple(parts)] = value
            else:
                stores[kind][tuple(parts)] = value
        pending: list[Any] | None = None
        if source is not None:
            present += sum(committed_present(raw, self.offset) for raw in uncounted)
            stores[ORDERS] = LazyStore(partition, ORDERS, self.offset, source.get, source.records,
                                       present + len(loaded), loaded)
            pending = list(loaded)
        for key, rec in sorted(logs, key=lambda item: _parse_key(item[0])[1]):
            if rec["o"] > self.offset:
                continue
            kind, _ = _parse_key(key)
            if kind == SEEN:
                seen = stores[SEEN]
                for dedup_key, base in rec["v"]:
                    seen[tuple(dedup_key) if dedup_key.__class__ is list else dedup_key] = base
                self.seen_logs.append((max(b for _, b in rec["v"]), key))
            else:
                rejected.update(rec["v"])
        self.stores = stores
        self.rejected = rejected
        self.engine = Engine(
            settings,
            clock,
            orders=stores[ORDERS],
            seen=cast("Tracked[Any]", stores[SEEN]),  # (never lazy)
            rejected=rejected,
            returns=stores[RETURNS],
            watermark=meta["watermark"],
            forward_stock=True,
            pending=pending,
        )
        self.retention_ms = settings.dedup_retention_ms
        #: Lineage entries of this batch, by order key; SLA samples of the last flush.
        self.lineage: dict[tuple[str, str], list[lineage.Entry]] = {}
        self.sla: list[tuple[str, float]] = []
        #: The keyed stores' values as this state's flushes wrote them (their prior values).
        self.written: Written[bytes] = Written()
        #: The order trails as this state's flushes wrote them.
        self.trails: Written[list[lineage.Entry]] = Written(TRAILS_KEPT)
        self._clear()

    def _clear(self) -> None:
        for store in self.stores.values():
            store.dirty.clear()
        self.rejected.added.clear()

    def process(self, raw: bytes) -> list[Output]:
        """One raw JSON record."""
        return self.engine.process(raw)

    def note(self, item: tuple[tuple[str, str], lineage.Entry] | None) -> None:
        """Add a lineage entry (from ``lineage.decoded_entry``/``milestone_entry``) to this batch."""
        if item is not None:
            self.lineage.setdefault(item[0], []).append(item[1])

    def flush(self, offset: int, previous: Callable[[bytes], bytes | None]) -> list[Write]:
        """The table writes that commit everything processed up to ``offset``, meta last.

        ``previous(key)`` reads a key's stored record, to keep the value it replaces.
        """
        writes: list[Write] = []
        p = self.partition
        for kind in _KEYED:
            writes.extend(keyed_writes(p, kind, self.stores[kind], offset, self.offset, previous, self.epoch, self.written))
        seen = self.stores[SEEN]
        added = [[key, seen[key]] for key in seen.dirty if key in seen]
        if added:
            tkey = table_key(p, SEEN, (self.seq,))
            self.seq += 1
            writes.append((tkey, orjson.dumps({"o": offset, "v": added, "e": self.epoch})))
            self.seen_logs.append((max(b for _, b in added), tkey))
        if self.rejected.added:
            tkey = table_key(p, REJECTED, (self.seq,))
            self.seq += 1
            writes.append((tkey, orjson.dumps({"o": offset, "v": list(self.rejected.added), "e": self.epoch})))
        writes.extend(self._expired_logs())
        # Lineage is an audit trail, not engine state: written without the value it
        # replaces; a batch redelivered after a crash does not add its entries twice.
        self.sla = []
        trails = self.trails
        head = key_head(p, LINEAGE)  # + the key's JSON list: table_key, once per flush
        for key, new in self.lineage.items():
            tkey = head + orjson.dumps(key)
            trail = trails.get(tkey)
            if trail is None:
                stored = previous(tkey)
                trail = orjson.loads(stored) if stored else []
            fresh = lineage.new_entries(trail, new)
            self.sla.extend(lineage.sla_samples(trail, fresh))
            trail = lineage.extend(trail, fresh)  # a new list: the one kept is never changed
            writes.append((tkey, orjson.dumps(trail)))
            trails.put(tkey, trail)
        self.lineage = {}
        writes.append(
            (
                table_key(p, META),
                orjson.dumps({"o": offset, "watermark": self.engine.watermark, "seq": self.seq, "e": self.epoch}),
            )
        )
        self.offset = offset
        self.committed_watermark = self.engine.watermark
        self._clear()
        return writes

    def _expired_logs(self) -> Iterator[Write]:
        """Dedup log records whose every key is past retention at the last *committed*
        watermark: a batch cut short before its meta is rolled back to that watermark, so
        it must not have deleted a log the reloaded state still needs."""
        wm = self.committed_watermark
        logs = self.seen_logs
        while wm is not None and logs and logs[0][0] + self.retention_ms <= wm:
            yield logs.popleft()[1], None

    def sizes(self) -> dict[str, int]:
        """Keys per store, for metrics."""
        return {
            "orders": len(self.stores[ORDERS]),
            "dedup_keys": len(self.stores[SEEN]),
            "returns": len(self.stores[RETURNS]),
        }


class InventoryState:
    """One stock-topic partition's inventory stage, its table-backed windows and commit point."""

    def __init__(
        self, partition: int, settings: CoreSettings, sources: int, records: Iterable[tuple[bytes, bytes]] = ()
    ) -> None:
        self.partition = partition
        self.epoch = 0
        windows: Tracked[StockKey] = Tracked()
        meta: dict[str, Any] = {"o": -1, "marks": [], "watermark": None}
        keyed: list[tuple[bytes, bytes]] = []
        for key, raw in records:
            kind = _parse_key(key)[0]
            if kind == META:
                meta = orjson.loads(raw)
            elif kind != FENCE:
                keyed.append((key, raw))
        self.offset: int = meta["o"]
        for _, parts, value in committed_records(keyed, self.offset):
            windows[tuple(parts)] = value
        windows.dirty.clear()
        self.windows = windows
        self.written: Written[bytes] = Written()
        self.stage = InventoryStage(settings, sources, windows, dict(meta["marks"]), meta["watermark"])

    def flush(self, offset: int, previous: Callable[[bytes], bytes | None]) -> list[Write]:
        """The table writes that commit everything processed up to ``offset``, meta last."""
        writes = list(keyed_writes(self.partition, WINDOWS, self.windows, offset, self.offset, previous, self.epoch,
                                   self.written))
        meta = {"o": offset, "marks": sorted(self.stage.marks.items()), "watermark": self.stage.watermark, "e": self.epoch}
        writes.append((table_key(self.partition, META), orjson.dumps(meta)))
        self.offset = offset
        self.windows.dirty.clear()
        return writes
