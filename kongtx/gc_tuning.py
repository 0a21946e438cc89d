# -*- test-case-name: tests.unit.test_gc_tuning -*-
"""The garbage collector after start-up, and the C heap's free pages given back.

A node or worker holds tens of megabytes of long-lived container objects (modules,
classes, functions, the router, the plugin registry).  With CPython's defaults every
full (generation 2) collection walks all of them, and the proxy's per-request
allocations trigger one every few thousand requests; the younger collections run every
few requests.  :func:`tune_after_startup` is called once a process is ready to serve
(imports done, listeners bound): it collects what start-up left behind, moves every
surviving object to the permanent generation (``gc.freeze``: never scanned again, still
freed by reference counting) and raises the thresholds so that collections run less
often.  Cycles made later are still found: the collector keeps running on the objects
allocated after the freeze.

Memory (issue 8: a worker's RSS).  glibc's ``free`` keeps the pages of a freed block
that is not at the top of the heap: the hash tables a growing dict leaves behind when
it resizes (the node cache's at 100,000s of entries: megabytes), a replaced router, the
temporaries of start-up.  :func:`release_free_memory` (``malloc_trim(0)``) hands them
back to the system; it is called after start-up and by the node cache
(:class:`kongtx.cache.Cache`) a moment after it grew by a quarter or stored a large
value, never on a request's path.  It costs 0.05-0.2 ms at a worker's size.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

#: gen0 runs once this many container objects were allocated net of deallocations
#: (CPython's default: 700); gen1 after this many gen0 runs (10), gen2 after this
#: many gen1 runs (10, and then only when it would scan at least 25 % new objects)
THRESHOLDS = (7_000, 20, 20)


def tune_after_startup() -> None:
    """Collect once, freeze what survives, raise the thresholds, give free pages back.

    Call it once per process, after start-up: calling it again freezes what was
    allocated in between (the caches' rows, for instance), which is harmless but
    keeps those objects out of every later collection, cycles included.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    release_free_memory()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (musl, macOS)."""
    try:
        import ctypes

        trim: Any = ctypes.CDLL(None).malloc_trim  # the libc this process runs on
    except (ImportError, OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


#: [the function, or None once known to be missing]; empty until first used
_trim: list[Callable[[int], int] | None] = []


def release_free_memory() -> bool:
    """Give the C heap's free pages back to the system; whether any were.

    Only what ``free`` already released and the allocator kept: no Python object moves
    or is collected.  A no-op (``False``) without glibc.
    """
    if not _trim:
        _trim.append(_malloc_trim())
    trim = _trim[0]
    return trim is not None and trim(0) == 1
