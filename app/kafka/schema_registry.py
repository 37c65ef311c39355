"""Schema Registry: the Confluent wire format (magic byte 0 + 4-byte schema id) beside
Avro single-object encoding.

Talks to the registry through confluent-kafka's ``SchemaRegistryClient`` (the Confluent REST
API, which Confluent Schema Registry, Apicurio Registry's ``/apis/ccompat/v7`` and Karapace
serve). At start-up (:func:`setup`) every schema in ``avro/`` is checked for compatibility
with its subject's latest version and registered (or, without auto-registration, looked
up): an incompatible or missing schema stops start-up with an error naming its subject.
Then :mod:`app.kafka.codec` decodes Confluent-framed records: each schema id is fetched once and
kept parsed (``codec.use_registry``), so records pay no registry call; an id the registry
does not know makes the record a dead letter naming the id. With ``OUTPUT_FORMAT=confluent``
the codec writes that framing through one ``AvroSerializer`` per schema (no
auto-registration: start-up registered the schema and looked it up, so the serializer's
first record finds it in the client's cache).

Reading does not go through ``AvroDeserializer``: the codec reads the id and the body itself
(the same bytes: tests read the serializer's output with the codec and the codec's output
with the deserializer) because that is the hot path, 3 to 4 times faster than the
deserializer, which also turns every timestamp into a ``datetime`` (the contract's are int ms).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from app.kafka import codec
from app.settings import SchemaRegistrySettings, Settings, SettingsError, TopicSettings, load, load_section

log = logging.getLogger("syncgov.schema_registry")


class RegistryStartupError(SettingsError):
    """Schemas the registry refuses (incompatible) or lacks; each error names its subject."""


class RegistryUnavailable(RuntimeError):
    """The registry did not answer (unreachable, 5xx, refused credentials): never a dead letter."""


def client_config(s: SchemaRegistrySettings) -> dict[str, Any]:
    """``SchemaRegistryClient`` configuration; the password only here, never logged."""
    conf: dict[str, Any] = {"url": s.url}
    if s.username:
        conf["basic.auth.user.info"] = f"{s.username}:{s.password.value}"
    if s.cafile:
        conf["ssl.ca.location"] = s.cafile
    return conf


def connect(s: SchemaRegistrySettings) -> Any:
    """A ``SchemaRegistryClient`` for the configured registry."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    return SchemaRegistryClient(client_config(s))


def topic_of(name: str, topics: TopicSettings) -> str:
    """The topic a schema's records go to (for the ``topic_record`` subject strategy)."""
    if name == codec.DEAD_LETTER_SCHEMA:
        return topics.dead_letters
    if name == f"{codec.MILESTONE_NAMESPACE}.SyncException":
        return topics.exceptions
    if name.startswith(f"{codec.MILESTONE_NAMESPACE}."):
        return topics.milestones
    return topics.events


def subject_for(name: str, strategy: str, topics: TopicSettings) -> str:
    """The subject of schema ``name``: ``record`` = its full name; ``topic_record`` =
    ``<topic>-<full name>`` (Confluent's RecordNameStrategy and TopicRecordNameStrategy)."""
    return name if strategy == "record" else f"{topic_of(name, topics)}-{name}"


def _unavailable(url: str, exc: Exception) -> RegistryUnavailable:
    return RegistryUnavailable(f"schema registry {url}: {exc.__class__.__name__}: {exc}")


def fetcher(client: Any, url: str) -> codec.FetchSchema:
    """``codec``'s lookup: schema id -> the writer schema's JSON text (only on a cache miss)."""
    from confluent_kafka.schema_registry import SchemaRegistryError

    def fetch(schema_id: int) -> str:
        try:
            schema = client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise codec.UnknownSchemaId(
                    f"unknown to the schema registry ({exc.error_message}, error code {exc.error_code})") from None
            raise _unavailable(url, exc) from exc
        except Exception as exc:  # httpx: connection refused, timeout, TLS
            raise _unavailable(url, exc) from exc
        kind = schema.schema_type or "AVRO"
        if kind != "AVRO":
            raise codec.UnknownSchemaId(f"a {kind} schema, not Avro")
        if schema.references:
            raise codec.UnknownSchemaId("an Avro schema with references to other subjects (not supported)")
        log.info("schema registry: schema id %d fetched", schema_id)
        return str(schema.schema_str)

    return fetch


def register(client: Any, s: Settings) -> dict[str, int]:
    """Check and register (or look up) every current schema; its id by full name. Every
    incompatible or missing schema is reported at once (:class:`RegistryStartupError`)."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryError

    r = s.schema_registry
    ids: dict[str, int] = {}
    errors: list[str] = []
    for name in codec.schema_names():
        subject = subject_for(name, r.subject_strategy, s.topics)
        schema = Schema(codec.schema_source(name), "AVRO")
        try:
            if r.auto_register:
                if not _compatible(client, subject, schema):
                    errors.append(f"schema registry subject {subject!r}: avro/{name}.avsc is incompatible with the "
                                  "subject's latest version (its compatibility level); evolve the schema compatibly "
                                  "or change the subject's compatibility in the registry")
                    continue
                ids[name] = client.register_schema(subject, schema)
            else:
                ids[name] = client.lookup_schema(subject, schema).schema_id
        except SchemaRegistryError as exc:
            if exc.http_status_code == 409:
                errors.append(f"schema registry subject {subject!r}: avro/{name}.avsc is incompatible: "
                              f"{exc.error_message}")
            elif exc.http_status_code == 404 and not r.auto_register:
                errors.append(f"schema registry subject {subject!r}: avro/{name}.avsc is not registered "
                              f"(SCHEMA_REGISTRY_AUTO_REGISTER=false): {exc.error_message}")
            elif exc.http_status_code == 422:
                errors.append(f"schema registry subject {subject!r}: avro/{name}.avsc refused: {exc.error_message}")
            else:
                raise _unavailable(r.url, exc) from exc
        except Exception as exc:  # httpx: connection refused, timeout, TLS
            raise _unavailable(r.url, exc) from exc
    if errors:
        raise RegistryStartupError(errors)
    return ids


def _compatible(client: Any, subject: str, schema: Any) -> bool:
    """Whether ``schema`` may be the subject's next version; a new subject (404) is."""
    from confluent_kafka.schema_registry import SchemaRegistryError

    try:
        return bool(client.test_compatibility(subject, schema, verbose=True))
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:  # 40401 subject not found (or 40402 no version yet)
            return True
        raise


def setup(s: Settings) -> Mapping[str, int]:
    """At start-up: with ``SCHEMA_REGISTRY_URL``, register and check the schemas and let the
    codec read (and, with ``OUTPUT_FORMAT=confluent``, write) the Confluent framing; the ids
    by schema name. Without it, Confluent-framed records stay dead letters."""
    r = s.schema_registry
    if not r.url:
        codec.use_registry(None)
        return {}
    client = connect(r)
    ids = register(client, s)
    output = writers(client, s) if r.output_format == "confluent" else None
    codec.use_registry(fetcher(client, r.url), output)
    log.info("schema registry %s: %d schemas %s (subjects: %s); output format %s", r.url, len(ids),
             "checked and registered" if r.auto_register else "found", r.subject_strategy, r.output_format)
    return ids


def writers(client: Any, s: Settings) -> dict[str, codec.WriteRecord]:
    """One ``AvroSerializer`` per schema (its subject by the strategy), as the codec's writers.
    Each subject's schema is looked up here, at start-up: the client keeps the answer, so a
    serializer's own look-up at its first record makes no request on the hot path."""
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    out: dict[str, codec.WriteRecord] = {}
    for name in codec.schema_names():
        subject = subject_for(name, s.schema_registry.subject_strategy, s.topics)
        try:
            client.lookup_schema(subject, Schema(codec.schema_source(name), "AVRO"))
        except Exception as exc:  # registered a moment ago: any failure is the registry's
            raise _unavailable(s.schema_registry.url, exc) from exc
        serializer = AvroSerializer(client, codec.schema_source(name), conf={
            "auto.register.schemas": False, "subject.name.strategy": lambda ctx, record_name, subject=subject: subject})
        out[name] = _writer(serializer, SerializationContext(topic_of(name, s.topics), MessageField.VALUE))
    return out


def _writer(serializer: Any, context: Any) -> codec.WriteRecord:
    def write(record: Mapping[str, Any]) -> bytes:
        return bytes(serializer(record, context))

    return write


def setup_decoding(r: SchemaRegistrySettings) -> None:
    """For a reader that writes nothing to Kafka (`syncgov replay`): decode Confluent-framed
    records through the registry, if one is configured; no registration."""
    codec.use_registry(fetcher(connect(r), r.url) if r.url else None)


def setup_command(command: str) -> None:
    """The registry set-up of a `syncgov` subcommand (``app.cli``): replay only decodes; the
    others (which write Avro) register and check the schemas first."""
    if command == "replay":
        setup_decoding(load_section(SchemaRegistrySettings))
    else:
        setup(load())
