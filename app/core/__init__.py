"""Pure governance core: the sync contract's rules as plain functions over plain state.

Imports only the standard library, orjson and msgspec; time is event time in int ms. With
``GOVERNANCE_CORE_BUILD`` set, its modules load from a mypyc build of these same sources
(``app.core._native``; a build from other sources is refused).
"""

from app.core import _native

_native.activate(__path__)

from app.core.engine import Engine  # noqa: E402 - after the build (if any) is on __path__
from app.core.model import CoreSettings, DeadLetter, Event, Milestone  # noqa: E402

__all__ = ["CoreSettings", "DeadLetter", "Engine", "Event", "Milestone"]
