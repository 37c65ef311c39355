"""Tryton calls through the coalescing batcher: batched reads (REST), bulk writes (JSON-RPC).

**Reads.** ``read(model, key_field, value, fields, extra)`` is one item of the group
(model, key field, fields, extra domain); the group's request is one REST search
``GET /<db>/rest/model/<model>?d=[*extra, [key_field, "in", [values...]]]`` and each caller
gets the records whose key field is its value. A long list is cut into several searches
so the URL stays under ``MAX_DOMAIN_CHARS``.

**Writes.** Tryton's own client speaks JSON-RPC (``POST /<db>/rpc/``); its methods take
lists of records, so one request runs a button on many shipments, writes many records
(``write(ids1, values1, ids2, values2, ..., context)``) or creates many
(``create([values...], context)``). Calls on the same (model, button), the same model's
writes, the same model's creates are grouped across documents. Tryton runs each request in
one transaction and refuses all of it when one record cannot take the step (*You can not
call "pick" on "OUT-000003"*, a validation error): nothing is committed, so the batcher
bisects until the one record stands alone with Tryton's words (``PermanentErpError``);
the rest go through. A button that succeeded moved every record (Tryton checks each
record's state before the button runs), so the new state is known without a read.

JSON-RPC authenticates with a session (``common.db.login`` with a login and password, once,
and again when Tryton answers 401/403 to an expired session); REST calls keep the
``res.user.application`` key. The session token and the password are scrubbed from every
detail. Each JSON-RPC request carries ``?m=<method>&n=<records>`` in its URL (Tryton's
router ignores the query) so a gateway access log shows what it was.

Without RPC credentials (``TrytonRpc`` None) writes go one by one over REST, as before;
reads are batched either way.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import urllib.parse
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from app.erp.batcher import Batcher
from app.erp.client import ErpHttpClient
from app.erp.port import ErpError, PermanentErpError, TransientErpError

log = logging.getLogger(__name__)

#: Base64 domain length per search request (the whole request line stays well under nginx's 8 KB).
MAX_DOMAIN_CHARS = 4000
#: The state a successful button leaves a record in (Tryton checks the states before it runs).
BUTTON_STATE = {"wait": "waiting", "assign_force": "assigned", "assign_try": "assigned", "pick": "picked",
                "pack": "packed", "ship": "shipped", "do": "done", "receive": "received", "draft": "draft",
                "cancel": "cancelled"}
#: Tryton error kinds that mean "try again" (the transaction was rolled back, nothing is wrong with the data).
_TRANSIENT_KINDS = ("ConcurrencyException", "RateLimitException")
_TRANSIENT_WORDS = ("database is locked", "OperationalError", "could not serialize", "deadlock", "TimeOutException",
                    "DatabaseTimeoutError")


#: Tryton warnings (dialogs for a person) a button raises per record, by (model, button). REST
#: calls skip them with ``_skip_warnings``; JSON-RPC drops ``_`` keys from the context, so a
#: bulk call answers them the way Tryton's own client does: a ``res.user.warning`` per record,
#: created before the call (one request for the batch; Tryton consumes each when it checks it).
PREDICTED_WARNINGS = {
    ("stock.shipment.out", "pack"): ("no_carrier",),
    ("stock.shipment.out", "do"): ("no_carrier",),
}


def warning_name(model: str, record_id: int, name: str) -> str:
    """``res.user.warning.format(name, [record])`` of Tryton 8.2 for a stored record."""
    return f"{hashlib.md5(f'{model},{record_id}'.encode()).hexdigest()}.{name}"


class RpcWarning(TransientErpError):
    """Tryton stopped the call at a warning (``name``) meant for a person: nothing committed."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(None, None, detail)
        self.name = name


class RpcRefused(PermanentErpError):
    """Tryton answered the JSON-RPC call with an error and rolled it back: nothing changed.
    Splittable: in a batch, one record is at fault."""


class TrytonRpc:
    """Tryton's JSON-RPC endpoint for one database, with a session from a login and password."""

    def __init__(self, client: ErpHttpClient, database: str, login: str, password: str) -> None:
        self.client, self.database, self.login, self._password = client, database, login, password
        client.add_secret(password)
        self._auth: dict[str, str] | None = None
        self.user_id: int | None = None
        self._lock = asyncio.Lock()
        self._seq = 0

    @property
    def path(self) -> str:
        return f"/{self.database}/rpc/"

    async def session(self) -> dict[str, str]:
        """The session's auth header; logs in once (through the quota), whoever asks."""
        async with self._lock:
            if self._auth is None:
                answer = await self._post("common.db.login", [self.login, {"password": self._password}, "en"], 1,
                                          auth={}, acquired=False)
                result = answer.get("result")
                if not isinstance(result, list) or len(result) < 2:
                    raise PermanentErpError(answer.get("status", 200), self.client.scrub(
                        f"Tryton JSON-RPC login of {self.login!r} refused: {str(answer)[:300]}"))
                user_id, token = result[0], str(result[1])
                self.user_id = int(user_id)
                self.client.add_secret(token)
                raw = base64.b64encode(f"{self.login}:{user_id}:{token}".encode()).decode()
                self._auth = {"Authorization": f"Session {raw}"}
            return self._auth

    def has_session(self) -> bool:
        return self._auth is not None

    async def _post(self, method: str, params: list[Any], n: int, *, auth: dict[str, str],
                    acquired: bool) -> dict[str, Any]:
        from app.erp.tryton import dumps, loads  # one JSON dialect with the REST calls

        self._seq += 1
        body = dumps({"id": self._seq, "method": method, "params": params})
        query = urllib.parse.urlencode({"m": method, "n": n})
        answer = await self.client.request("POST", f"{self.path}?{query}", body=body, auth=auth, acquired=acquired)
        try:
            parsed = loads(answer.body)
        except ValueError:
            raise PermanentErpError(answer.status, self.client.scrub(
                f"POST {self.path} {method}: unparseable answer: {answer.body[:300]!r}")) from None
        if not isinstance(parsed, dict):
            raise PermanentErpError(answer.status, f"POST {self.path} {method}: unexpected answer {str(parsed)[:300]}")
        return parsed

    async def call(self, method: str, params: list[Any], n: int, *, acquired: bool) -> Any:
        """One JSON-RPC call; its ``result``, or a classified error. ``acquired``: the caller
        holds a rate slot (the batcher)."""
        if self._auth is None:
            if acquired:  # never wait for a second slot while holding one
                self.client.release_unsent()
                acquired = False
            await self.session()
        assert self._auth is not None
        try:
            answer = await self._post(method, params, n, auth=self._auth, acquired=acquired)
        except PermanentErpError as exc:
            if exc.status not in (401, 403):
                raise
            # The session expired (refused before anything ran): log in again, once.
            log.info("Tryton JSON-RPC session refused (%s); logging in again", exc.status)
            async with self._lock:
                self._auth = None
            await self.session()
            answer = await self._post(method, params, n, auth=self._auth or {}, acquired=False)
        if "error" in answer and answer["error"] is not None:
            raise self._error(method, answer["error"])
        return answer.get("result")

    def _error(self, method: str, error: Any) -> ErpError:
        kind, words = self._words(error)
        detail = self.client.scrub(f"POST {self.path} {method}: {kind}: {words}")
        if kind == "UserWarning" and isinstance(error, (list, tuple)) and len(error) > 1 and error[1]:
            return RpcWarning(str(error[1][0]), detail)
        if kind in _TRANSIENT_KINDS or any(w in words for w in _TRANSIENT_WORDS):
            return TransientErpError(None, None, detail)  # rolled back: not an unknown outcome
        return RpcRefused(400, detail)

    @staticmethod
    def _words(error: Any) -> tuple[str, str]:
        """Tryton's error as (kind, message): ``["UserError", [message, description, domain]]``,
        ``["ConcurrencyException", message]``, or ``[str(exception), traceback]``."""
        if isinstance(error, (list, tuple)) and error:
            kind = str(error[0])
            rest = error[1] if len(error) > 1 else ""
            if isinstance(rest, (list, tuple)):
                words = " ".join(str(part) for part in rest[:2] if part)
            else:
                words = str(rest)
            if kind in ("UserError", "UserWarning", "AccessError", "LoginException") or kind in _TRANSIENT_KINDS:
                return kind, words
            return "Error", kind + (f" ({words.strip().splitlines()[-1]})" if words.strip() else "")
        return "Error", str(error)[:500]


def _domain_b64(domain: Any) -> str:
    from app.erp.tryton import dumps

    return base64.urlsafe_b64encode(dumps(domain)).decode()


def request_kind(group: Hashable) -> str:
    """A batch group's kind of request (its batch size limit and its metrics' label):
    ``read <model>``, ``button <model>.<name>``, ``write <model>``, ``create <model>``."""
    assert isinstance(group, tuple)
    if group[0] == "button":
        return f"button {group[1]}.{group[2]}"
    return f"{group[0]} {group[1]}"


class TrytonOps:
    """What the adapter does to Tryton, each call an item of a batch."""

    def __init__(self, rest: Any, rpc: TrytonRpc | None, *, max_items: int = 100, target_s: float = 3.0,
                 window_s: float = 0.01) -> None:
        self.rest, self.rpc = rest, rpc
        self._answered: set[str] = set()  # warnings answered 'always' by this adapter
        client: ErpHttpClient | None = getattr(rest, "client", None)
        self.batcher = Batcher(client, self._execute,  # type: ignore[arg-type]  # None: a unit test without calls
                               max_items=max_items, target_s=target_s, window_s=window_s,
                               splittable=lambda exc: isinstance(exc, RpcRefused),
                               before_send=getattr(client, "before_send", None), kind=request_kind)

    @property
    def bulk(self) -> bool:
        return self.rpc is not None

    async def close(self) -> None:
        await self.batcher.close()

    # -- the calls --------------------------------------------------------------------------

    async def read(self, model: str, key_field: str, value: Any, fields: Iterable[str],
                   extra: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The records of ``model`` whose ``key_field`` is ``value`` (and match ``extra``)."""
        fields = tuple(dict.fromkeys((key_field, *fields)))
        await self.rest.context()  # cached: never fetched while the batcher holds a slot
        group = ("read", model, key_field, fields, json.dumps(list(extra), default=str))
        found: list[dict[str, Any]] = await self.batcher.call(group, value)
        return found

    async def read_one(self, model: str, key_field: str, value: Any, fields: Iterable[str],
                       extra: Sequence[Any] = ()) -> dict[str, Any] | None:
        found = await self.read(model, key_field, value, fields, extra)
        return found[0] if found else None

    async def _ready(self) -> None:
        """Context and session first, in the caller's task (the batcher's request must not
        wait for another slot while it holds one)."""
        await self.rest.context()
        if self.rpc is not None and not self.rpc.has_session():
            await self.rpc.session()

    async def button(self, model: str, record_id: int, name: str) -> str | None:
        """Run a workflow button; the state Tryton answered (REST) or None (JSON-RPC: the
        state is ``BUTTON_STATE[name]``, Tryton refuses a record that cannot take it)."""
        if self.rpc is None:
            record = await self.rest.button(model, record_id, name)
            return record.get("state") if isinstance(record, dict) else None
        await self._ready()
        await self.batcher.call(("button", model, name), record_id)
        return BUTTON_STATE.get(name)

    async def write(self, model: str, record_id: int, values: dict[str, Any]) -> None:
        if self.rpc is None:
            await self.rest.write(model, record_id, values)
            return
        await self._ready()
        await self.batcher.call(("write", model), (record_id, values))

    async def create(self, model: str, values: dict[str, Any], fields: Iterable[str] = ()) -> dict[str, Any]:
        """A new record: REST answers it with ``fields``; JSON-RPC with its id (state draft)."""
        if self.rpc is None:
            created: dict[str, Any] = await self.rest.create(model, values, fields)
            return created
        await self._ready()
        record_id = await self.batcher.call(("create", model), values)
        return {"id": int(record_id), "state": "draft"}

    # -- one request per group ----------------------------------------------------------------

    async def _execute(self, group: Hashable, payloads: list[Any]) -> Sequence[Any]:
        assert isinstance(group, tuple)
        op = group[0]
        if op == "read":
            return await self._read(group, payloads)
        assert self.rpc is not None
        context = {**await self.rest.context(), "_skip_warnings": True}
        if op == "button":
            _, model, name = group
            ids = list(dict.fromkeys(int(i) for i in payloads))
            acquired = True
            names = [warning_name(model, i, w) for i in ids for w in PREDICTED_WARNINGS.get((model, name), ())]
            names = [n for n in names if n not in self._answered]
            if names:
                await self._skip_warnings(names, acquired=True, always=True)
                acquired = False
            for attempt in range(4):
                try:
                    await self.rpc.call(f"model.{model}.{name}", [ids, context], len(ids), acquired=acquired)
                    break
                except RpcWarning as warning:
                    if attempt == 3:
                        raise RpcRefused(400, warning.detail) from None  # bisect: the record stands alone
                    log.info("Tryton warning %s on %s.%s of %d records: answered, call repeated",
                             warning.name, model, name, len(ids))
                    await self._skip_warnings([warning.name], acquired=False)
                    acquired = False
            return [None] * len(payloads)
        if op == "write":
            _, model = group
            args: list[Any] = []
            for record_id, values in payloads:
                args += [[int(record_id)], values]
            await self.rpc.call(f"model.{model}.write", [*args, context], len(payloads), acquired=True)
            return [None] * len(payloads)
        if op == "create":
            _, model = group
            ids = await self.rpc.call(f"model.{model}.create", [list(payloads), context], len(payloads),
                                      acquired=True)
            if not isinstance(ids, list) or len(ids) != len(payloads):
                # Created, but the answer does not say which is which: an unknown outcome per item
                # (the read-before-write finds each by its reference after the settle time).
                error = TransientErpError(200, None, f"model.{model}.create answered {str(ids)[:200]}", unknown=True)
                return [error] * len(payloads)
            return ids
        raise ValueError(f"unknown ERP batch group {group!r}")

    async def _skip_warnings(self, names: list[str], *, acquired: bool, always: bool = False) -> None:
        """Answer Tryton warnings ahead, as its client does when a person confirms them
        (``always``: for every later check too: pack and do ask the same no-carrier question
        of one shipment, so one answer serves both)."""
        assert self.rpc is not None and self.rpc.user_id is not None
        await self.rpc.call("model.res.user.warning.create",
                            [[{"user": self.rpc.user_id, "name": n, "always": always} for n in names], {}],
                            len(names), acquired=acquired)
        if always:
            self._answered.update(names)
            if len(self._answered) > 100_000:
                self._answered.clear()

    async def _read(self, group: tuple[Any, ...], values: list[Any]) -> list[Any]:
        _, model, key_field, fields, extra_json = group
        extra = json.loads(extra_json)
        wanted = list(dict.fromkeys(values))
        chunks: list[list[Any]] = [[]]
        for value in wanted:
            trial = [*chunks[-1], value]
            if chunks[-1] and len(_domain_b64([*extra, [key_field, "in", trial]])) > MAX_DOMAIN_CHARS:
                chunks.append([value])
            else:
                chunks[-1] = trial
        found: dict[Any, list[dict[str, Any]]] = {}
        for n, chunk in enumerate(chunks):
            records = await self.rest.search(model, [*extra, [key_field, "in", chunk]], fields,
                                             acquired=(n == 0))
            for record in records:
                found.setdefault(_key(record.get(key_field)), []).append(record)
        return [found.get(_key(value), []) for value in values]


def _key(value: Any) -> Any:
    """A key field as read back: Many2One/Reference answers may be nested dicts."""
    if isinstance(value, dict):
        return value.get("id")
    return value
