"""The generator's processes run SCHED_BATCH; what it starts for the measurement does not."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from benchmarks.sched import in_background, run_in_foreground

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling")


def test_in_background_is_batch_inside_and_restores_after() -> None:
    before = os.sched_getscheduler(0)
    assert before != os.SCHED_BATCH
    seen: list[int] = []
    with in_background() as changed:
        assert changed
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
        # A thread started inside inherits it (fastrx's receive thread does).
        thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
        thread.start()
        thread.join()
    assert seen == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == before


def test_a_child_started_in_background_is_put_back_in_the_foreground() -> None:
    with in_background():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert os.sched_getscheduler(child.pid) == os.SCHED_BATCH  # inherited
        assert run_in_foreground(child.pid)
        assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
    finally:
        child.kill()
        child.wait()
