"""Keep the process's resident memory close to what it uses: fewer malloc arenas, freed memory given back.

Measured on the `torch` backend (README "Performance"): most of the memory above the model itself is
freed memory that glibc keeps, either in one arena per thread that ever allocated (up to 8 per core) or
left over from loading the weights and from batch activations; and library code that ran only at import.
Three calls give it back, through ctypes because no maintained library wraps them (psutil and resource do not):

1. `mallopt(M_ARENA_MAX, n)`: the decode threads share `n` arenas instead of each keeping its own.
2. `malloc_trim(0)`: hand free pages of every arena back to the OS; run after start-up and when idle,
   never between batches under load (the next batch would fault the pages back in).
3. `madvise(MADV_PAGEOUT)` on the read-only pages of shared libraries, once before the warm-up: importing
   torch runs about 130 MB of libtorch code (operator registration) that serving never runs again. Those
   pages are clean, so the kernel would drop them only under memory pressure; until then they count in
   RSS and against a container's memory limit. The 15-20 MB that inference does use fault back in during
   the warm-up. Linux 5.4 and newer; elsewhere a no-op.

All are no-ops where the C library is not glibc (musl, macOS): the service works the same, only bigger.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # from glibc's malloc.h
_MADV_PAGEOUT = 21  # from Linux's mman-common.h


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018  # present only in glibc
        libc.malloc_trim  # noqa: B018
        libc.mallopt  # noqa: B018
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def is_supported() -> bool:
    """True when the C library is glibc, the one these calls exist in."""
    return _glibc() is not None


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas for threads started from now on (0 = leave glibc's default); True if applied."""
    libc = _glibc()
    if libc is None or arenas <= 0:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Collect garbage, then return free heap pages to the OS; True if glibc released any."""
    gc.collect()
    libc = _glibc()
    if libc is None:
        return False
    released = bool(libc.malloc_trim(0))
    log.debug("malloc_trim released memory: %s", released)
    return released


def shared_library_ranges(maps: str) -> list[tuple[int, int]]:
    """Address ranges of the read-only, file-backed mappings of shared libraries in a /proc/<pid>/maps text."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "w" in fields[1]:
            continue
        name = fields[5].strip()
        if name.startswith("/") and (name.endswith(".so") or ".so." in name.rsplit("/", 1)[-1]):
            start, end = (int(part, 16) for part in fields[0].split("-"))
            ranges.append((start, end))
    return ranges


def page_out_shared_libraries() -> int:
    """Ask the kernel to drop the resident read-only pages of shared libraries; returns the bytes advised.

    Pages still in use come back on their next access (from the page cache or the file), so this only
    costs page faults; it is meant to run once, before the warm-up (which faults back what requests use), not on a
    hot path.
    """
    libc = _glibc()
    if libc is None:
        return 0
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return 0
    advised = 0
    for start, end in shared_library_ranges(maps):
        if libc.madvise(start, end - start, _MADV_PAGEOUT) != 0:
            return advised  # EINVAL before Linux 5.4: nothing to gain from trying the rest
        advised += end - start
    log.debug("paged out %d MB of shared-library mappings", advised >> 20)
    return advised
