"""Compile a C kernel on first use and load it with ctypes: the machinery shared by
`_crf_native.py`, `_stages_native.py` and `_dbscan_native.py` (no build step, no new dependency).

`NativeKernel(name, source, env_switch, setup, flag_sets=...)`:
- `load()` returns None while the environment variable `env_switch` is "0" (checked on every
  call, nothing cached); otherwise it builds (or finds in the cache) and loads the library
  once, passes it to `setup` (which sets argtypes / restype and returns what `load()` hands
  out: the library or one of its functions) and keeps the result. A failure (no C compiler,
  the compiler's error, a missing symbol) is kept too and `load()` returns None from then on,
  the reason in `load_error()`;
- the compiler: $CC, else cc, gcc or clang on PATH;
- `flag_sets` are tried in order (e.g. with -march=native first, then without, for a compiler
  or target that does not know it); the first that compiles and loads wins;
- the library lives in paths.cache_dir() / "native" as `<name>_<key>.so`. With
  keyed_on_toolchain (the default) the key hashes the source, the compiler, the flags and this
  CPU's identity (model and instruction-set flags from /proc/cpuinfo), so a cache directory
  shared with another machine never loads code built for instructions it lacks; without it,
  the source alone (a portable build), and a cached library loads without a compiler;
- a cache directory that is not writable falls back to a per-user directory under the
  system's temporary directory; the file is written atomically (os.replace), so concurrent
  processes never load a half-written one.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise OSError("no C compiler (cc, gcc or clang) on PATH")
    return cc


def cpu_identity() -> str:
    """Model name and instruction-set flags of this CPU: part of the cache key, because the
    library may be built with -march=native."""
    ident = [platform.machine()]
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip()
            if key in ("model name", "flags", "Features", "CPU part") and line not in ident:
                ident.append(line)
            if len(ident) > 3:
                break
    except OSError:
        pass
    return "\n".join(ident)


class NativeKernel:
    """One C source compiled on first use and loaded with ctypes (see the module docstring)."""

    def __init__(self, name: str, source: str, env_switch: str, setup: Callable[[ctypes.CDLL], Any], *,
                 flag_sets: Sequence[Sequence[str]], libs: Sequence[str] = (), keyed_on_toolchain: bool = True):
        self.name = name
        self.source = source
        self.env_switch = env_switch
        self.setup = setup
        self.flag_sets = [list(f) for f in flag_sets]
        self.libs = list(libs)  # after the source on the command line (e.g. -lm)
        self.keyed_on_toolchain = keyed_on_toolchain
        self._lib: Any = None
        self._load_error: str | None = None

    def _compile(self, cc: str, flags: list[str], dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            src = Path(tmp) / f"{self.name}.c"
            src.write_text(self.source)
            out = Path(tmp) / dest.name
            res = subprocess.run([cc, *flags, "-o", str(out), str(src), *self.libs], capture_output=True, text=True,
                                 timeout=120)
            if res.returncode != 0:
                raise OSError(f"{cc} failed: {res.stderr.strip()[:500]}")
            os.replace(out, dest)  # atomic: concurrent processes never load a half-written file

    def _key(self, cc: str | None, flags: list[str]) -> str:
        parts = [self.source, cc, *flags, cpu_identity()] if self.keyed_on_toolchain else [self.source]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    def _build_and_load(self, cache: Path) -> ctypes.CDLL:
        # keyed on the toolchain: the compiler is part of the key, so it is needed up front;
        # otherwise only when the library has to be built
        cc = compiler() if self.keyed_on_toolchain else None
        last: Exception | None = None
        for flags in self.flag_sets:
            try:
                path = cache / f"{self.name}_{self._key(cc, flags)}.so"
                if not path.exists():
                    cc = cc or compiler()
                    try:
                        self._compile(cc, flags, path)
                    except PermissionError:
                        path = Path(tempfile.gettempdir()) / f"squeeze_perception_{os.getuid()}" / path.name
                        if not path.exists():
                            self._compile(cc, flags, path)
                return ctypes.CDLL(str(path))
            except (OSError, subprocess.SubprocessError) as exc:
                last = exc
        raise OSError(str(last))

    def load(self):
        """What `setup` returned for the loaded library, or None (reason in `load_error()`)."""
        if os.environ.get(self.env_switch, "1") == "0":
            return None
        if self._lib is not None or self._load_error is not None:
            return self._lib
        try:
            from ..paths import cache_dir

            self._lib = self.setup(self._build_and_load(cache_dir() / "native"))
        except (OSError, subprocess.SubprocessError, AttributeError) as exc:
            self._load_error = str(exc)
        return self._lib

    def load_error(self) -> str | None:
        return self._load_error
