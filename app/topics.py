"""The Faust handles of every topic the app uses (names from settings). `syncgov worker`
creates and checks them before Faust starts (``app.kafka_io.worker_topics``, the one
source of their configs)."""
from __future__ import annotations

from app.faust_app import SETTINGS, app
from app.kafka_io import TOPIC_CONFIG as _KEEP

_T = SETTINGS.topics

events = app.topic(_T.events, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
milestones = app.topic(_T.milestones, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
dead_letters = app.topic(_T.dead_letters, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
exceptions = app.topic(_T.exceptions, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
#: Internal repartition topic of the inventory stage (see agents/inventory.py).
stock = app.topic(_T.stock, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
erp_dead_letters = app.topic(
    _T.erp_dead_letters, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP
)
