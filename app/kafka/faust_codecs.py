"""Faust codecs over ``app.kafka.codec``; importing this module registers them by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from faust.serializers import codecs

from app.kafka.codec import (
    DEAD_LETTER_SCHEMA,
    decode,
    decode_dead_letter,
    encode,
    encode_event,
    encode_milestone,
)

EVENT_CODEC: Final = "sgov_event"
MILESTONE_CODEC: Final = "sgov_milestone"
DEAD_LETTER_CODEC: Final = "sgov_dead_letter"


def _as_dict(obj: Any) -> Mapping[str, Any]:
    """A mapping as is; anything else (e.g. a Milestone) through its ``to_dict()``."""
    return obj if isinstance(obj, Mapping) else obj.to_dict()


class EventCodec(codecs.Codec):
    """Input events: Avro out, Avro or JSON in."""

    def _dumps(self, s: Any) -> bytes:
        return encode_event(_as_dict(s))

    def _loads(self, s: bytes) -> Any:
        return decode(s)


class MilestoneCodec(codecs.Codec):
    """Milestones (dicts or ``Milestone`` objects): Avro out, Avro or JSON in."""

    def _dumps(self, s: Any) -> bytes:
        return encode_milestone(_as_dict(s))

    def _loads(self, s: bytes) -> Any:
        return decode(s)


class DeadLetterCodec(codecs.Codec):
    """Dead letters (dict with the ``syncgov.ops.DeadLetter`` fields), Avro both ways."""

    def _dumps(self, s: Any) -> bytes:
        return encode(_as_dict(s), DEAD_LETTER_SCHEMA)

    def _loads(self, s: bytes) -> Any:
        return decode_dead_letter(s)


codecs.register(EVENT_CODEC, EventCodec())
codecs.register(MILESTONE_CODEC, MilestoneCodec())
codecs.register(DEAD_LETTER_CODEC, DeadLetterCodec())
