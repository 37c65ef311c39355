"""Every topic the app uses, in one place (names from settings)."""
from __future__ import annotations

from app.faust_app import SETTINGS, app

_T = SETTINGS.topics
#: Retention is explicit: Tansu answers DescribeConfigs only for topics created with it.
_KEEP = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}

events = app.topic(_T.events, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
milestones = app.topic(_T.milestones, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
dead_letters = app.topic(_T.dead_letters, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
exceptions = app.topic(_T.exceptions, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
#: Internal repartition topic of the inventory stage (see agents/inventory.py).
stock = app.topic(_T.stock, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP)
erp_dead_letters = app.topic(
    _T.erp_dead_letters, key_serializer="raw", value_serializer="raw", partitions=_T.partitions, config=_KEEP
)
