"""Chooses the datapath: native (Cython, native/) when built, else pure Python.

The only module that imports native/. Both give the same bytes for the same input
(tests/io/test_native_fanout.py), so the choice changes cost, never behaviour.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.routing.fanout import Address, Datapath, PythonDatapath

if TYPE_CHECKING:
    from native.fanout import NativeDatapath

log = logging.getLogger(__name__)


class DatapathUnavailable(RuntimeError):
    pass


def _load_native() -> type[NativeDatapath]:
    # The extension calls libsrtp's srtp_protect, resolved from the OpenSSL-backed
    # libsrtp inside the pylibsrtp wheel (Debian's libsrtp2 is NSS-backed and slower).
    # Python loads extension modules RTLD_LOCAL: promote that one to global first.
    import pylibsrtp._binding as binding

    ctypes.CDLL(binding.__file__, mode=os.RTLD_NOW | os.RTLD_GLOBAL | os.RTLD_NOLOAD)
    from native.fanout import NativeDatapath

    return NativeDatapath


def native_available() -> bool:
    try:
        _load_native()
    except (ImportError, OSError):
        return False
    return True


def create_datapath(name: str, sender: Callable[[bytes, Address], None]) -> Datapath:
    """`python`, `native`, or `auto` (native when built)."""
    if name == "python":
        return PythonDatapath(sender)
    try:
        native = _load_native()
    except (ImportError, OSError) as exc:
        if name == "native":
            raise DatapathUnavailable(f"native datapath not built: {exc}") from exc
        log.warning("native datapath not built, using the Python one: %s", exc)
        return PythonDatapath(sender)
    return native()
