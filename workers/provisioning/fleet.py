"""Run one function per host in parallel; every host gets a result or an exception.

Modelled on Fabric's ``ThreadingGroup``/``GroupResult``: a :class:`FleetResult` maps
each host's name to what its function returned or to the exception it raised, so one
failing host never hides the others, and callers decide what a partial failure means.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from broker.errors import TunerError
from workers.provisioning.errors import FleetError, ProvisionError

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")

MAX_PARALLEL_HOSTS = 32


class FleetResult(dict, Generic[T]):  # type: ignore[type-arg]
    """Host name -> result (``T``) or the exception that host raised, in host order."""

    @property
    def succeeded(self) -> dict[str, T]:
        return {k: v for k, v in self.items() if not isinstance(v, BaseException)}

    @property
    def failed(self) -> dict[str, BaseException]:
        return {k: v for k, v in self.items() if isinstance(v, BaseException)}

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_on_failure(self, what: str = "operation") -> FleetResult[T]:
        """``self`` if every host succeeded, else :class:`FleetError` carrying it."""
        failed = self.failed
        if failed:
            reasons = "; ".join(str(exc) for exc in failed.values())
            raise FleetError(f"{what} failed on {len(failed)} of {len(self)} hosts: {reasons}",
                             self)
        return self


def run_parallel(items: Iterable[Item], key: Callable[[Item], str],
                 fn: Callable[[Item], T], *, parallel: int = MAX_PARALLEL_HOSTS,
                 step: str = "unexpected") -> FleetResult[T]:
    """``fn(item)`` for every item at once (up to ``parallel`` threads). A
    :class:`TunerError` is kept as the item's outcome; any other exception is logged
    with its traceback and kept as a :class:`ProvisionError` naming ``step``."""
    items = list(items)
    result: FleetResult[T] = FleetResult()
    if not items:
        return result

    def guarded(item: Item) -> T | BaseException:
        try:
            return fn(item)
        except TunerError as exc:
            return exc
        except Exception as exc:
            log.exception("%s on %s", step, key(item))
            return ProvisionError(key(item), step, f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items))),
                            thread_name_prefix="fleet") as pool:
        outcomes = list(pool.map(guarded, items))
    for item, outcome in zip(items, outcomes, strict=True):
        result[key(item)] = outcome
    return result
