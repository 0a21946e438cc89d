# -*- test-case-name: tests.unit.test_gc_tuning -*-
"""The garbage collector after start-up: what a serving process keeps is not rescanned.

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
"""

from __future__ import annotations

import gc

#: gen0 runs once this many container objects were allocated net of deallocations
#: (CPython's default: 700); gen1 after this many gen0 runs (10), gen2 after this
#: many gen1 runs (10, and then only when it would scan at least 25 % new objects)
THRESHOLDS = (7_000, 20, 20)


def tune_after_startup() -> None:
    """Collect once, freeze what survives and raise the thresholds (idempotent enough).

    Call it once per process, after start-up: calling it again freezes what was
    allocated in between (the caches' rows, for instance), which is harmless but
    keeps those objects out of every later collection, cycles included.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
