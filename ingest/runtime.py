"""Process-level tuning shared by the long-running services (the collector, the aggregator).

Kept apart from `ingest.app` so that the aggregator can use it without importing the
collector's web app (imports follow the data: ingest -> aggregator -> api).
"""

from __future__ import annotations

import asyncio
import gc

# Young-generation collections every 20 000 allocations instead of 700: a 20-event request
# allocates a few hundred containers, and at the default the cyclic GC ran every few requests
# (measured: about a fifth of the collector's CPU per request under load).
GC_THRESHOLD = (20_000, 10, 10)


def tune_gc() -> None:
    """Moves what exists now (modules, compiled regexes, the app) out of every later
    collection (`gc.freeze`), and collects the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def use_uvloop() -> None:
    """Makes every event loop created from now on (other threads' too) a uvloop one, when
    uvloop is installed."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
