"""The Faust handles of every topic the worker uses (names from settings), declared on an
app by ``declare``. `syncgov worker` creates and checks the topics before Faust starts
(``app.kafka.clients.worker_topics``, the one source of their configs)."""
from __future__ import annotations

from dataclasses import dataclass

import faust
from faust.types import TopicT

from app.kafka.clients import TOPIC_CONFIG
from app.settings import Settings


@dataclass(frozen=True)
class Topics:
    events: TopicT
    milestones: TopicT
    dead_letters: TopicT
    exceptions: TopicT
    #: Internal repartition topic of the inventory stage (see app/stages/inventory.py).
    stock: TopicT
    erp_dead_letters: TopicT

    def all(self) -> tuple[TopicT, ...]:
        return (self.events, self.milestones, self.dead_letters, self.exceptions, self.stock, self.erp_dead_letters)


def declare(app: faust.App, s: Settings) -> Topics:
    """Declare the worker's topics on ``app`` (raw keys and values: the codecs are ours)."""
    t = s.topics

    def topic(name: str) -> TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=t.partitions,
                         config=TOPIC_CONFIG)

    return Topics(
        events=topic(t.events),
        milestones=topic(t.milestones),
        dead_letters=topic(t.dead_letters),
        exceptions=topic(t.exceptions),
        stock=topic(t.stock),
        erp_dead_letters=topic(t.erp_dead_letters),
    )
