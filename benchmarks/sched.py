"""Keep the load generator from preempting the server it measures.

On loopback the generator shares the server's cores. Its receivers wake at every burst
the server sends, and a woken SCHED_OTHER task may preempt the server in the middle of
a fan-out, which a client across a real network never does. SCHED_BATCH keeps the
generator's fair share of CPU (no nice penalty, its CPU is still measured and
reported) but a woken batch task does not preempt the running one (sched(7)). Latency
is taken from kernel receive timestamps, so a receiver that runs a little later does
not change what is measured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def _set(pid: int, policy: int) -> bool:
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(0))
    except (AttributeError, OSError):
        return False  # not Linux, or not allowed: measure as before
    return True


def run_in_background() -> bool:
    """The calling thread, and threads it starts later, become SCHED_BATCH."""
    return _set(0, getattr(os, "SCHED_BATCH", -1))


def run_in_foreground(pid: int) -> bool:
    """A child that inherited SCHED_BATCH (the server, the relay) gets SCHED_OTHER back."""
    return _set(pid, getattr(os, "SCHED_OTHER", -1))


@contextlib.contextmanager
def in_background() -> Iterator[bool]:
    """SCHED_BATCH for the calling thread while inside; its old policy after."""
    try:
        before = os.sched_getscheduler(0)
    except (AttributeError, OSError):
        yield False
        return
    changed = run_in_background()
    try:
        yield changed
    finally:
        if changed:
            _set(0, before)
