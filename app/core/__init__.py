"""Pure governance core: the sync contract's rules as plain functions over plain state.

Imports only the standard library and orjson; time is event time in int ms.
"""

from app.core.engine import Engine
from app.core.model import CoreSettings, DeadLetter, Event, Milestone

__all__ = ["CoreSettings", "DeadLetter", "Engine", "Event", "Milestone"]
