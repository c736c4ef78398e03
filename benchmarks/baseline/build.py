"""Compile relay.c against the libsrtp inside the pylibsrtp wheel.

The wheel's `pylibsrtp/_binding*.so` carries libsrtp 2 built with OpenSSL (the same
code the SFU runs), exporting the srtp_* symbols; Debian's libsrtp2 is built with NSS
and is much slower, so it is never used. The binary finds the .so again through an
rpath to the wheel's directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("relay.c")
BUILD_DIR = Path(__file__).resolve().parents[1] / "results" / "baseline"
BUILD_TIMEOUT_S = 60.0


class BaselineUnavailable(Exception):
    """The relay cannot be built here: no C compiler, or no libsrtp from the wheel."""


def srtp_library() -> Path:
    """The pylibsrtp extension module that holds libsrtp."""
    spec = importlib.util.find_spec("pylibsrtp")
    if spec is None or not spec.submodule_search_locations:
        raise BaselineUnavailable("pylibsrtp is not installed, so there is no libsrtp to link")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("_binding*.so"))
        if found:
            return found[0]
    raise BaselineUnavailable("the pylibsrtp package has no _binding*.so to link against")


def compiler() -> str:
    for name in ("gcc", "cc"):
        path = shutil.which(name)
        if path:
            return path
    raise BaselineUnavailable("no C compiler (gcc or cc) on PATH")


def build(out_dir: Path = BUILD_DIR) -> Path:
    """Compile the relay into out_dir and return the executable's path."""
    library = srtp_library()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "relay"
    partial = out_dir / f".relay.{os.getpid()}"
    command = [
        compiler(),
        "-O2",
        "-Wall",
        "-Wextra",
        "-o",
        str(partial),
        str(SOURCE),
        f"-L{library.parent}",
        f"-l:{library.name}",
        f"-Wl,-rpath,{library.parent}",
        # The .so is a CPython extension: its Py* functions stay unresolved (bound
        # lazily, never called), and relay.c's stand-in for _Py_NoneStruct is exported.
        "-Wl,--allow-shlib-undefined",
        "-Wl,-z,lazy",
        "-Wl,--export-dynamic-symbol=_Py_NoneStruct",
    ]
    return compile_into(command, partial, target, "the relay")


def compile_into(command: list[str], partial: Path, target: Path, what: str) -> Path:
    """Run the compiler writing `partial`, then move it to `target` (atomic: concurrent
    builds each finish a whole file); BaselineUnavailable says why if it fails."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BaselineUnavailable(f"compiling {what} failed: {exc}") from exc
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BaselineUnavailable(
            f"compiling {what} failed ({' '.join(command)}):\n{done.stderr.strip()}"
        )
    os.replace(partial, target)
    return target
