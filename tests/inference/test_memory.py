"""Giving memory back to the OS: malloc arenas, malloc_trim and paging out start-up-only library code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_api.inference import memory

glibc_only = pytest.mark.skipif(not memory.is_supported(), reason="needs glibc")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")

MAPS = """\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 1 /usr/bin/python3.11
7f0000000000-7f0000100000 r--p 00000000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000100000-7f0000300000 r-xp 00100000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000300000-7f0000304000 rw-p 00300000 08:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1008000000 r-xp 00000000 08:01 3 /venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so
7f2000000000-7f2000010000 r--p 00000000 08:01 4 /usr/lib/locale/locale-archive
7f3000000000-7f3000010000 r--p 00000000 00:00 0 [vvar]
7f4000000000-7f4000200000 rw-p 00000000 00:00 0
7f5000000000-7f5000010000 r--p 00000000 08:01 5 /tmp/name with spaces/libx.so.1.2 (deleted)
"""


def test_only_read_only_shared_library_mappings_are_paged_out() -> None:
    assert memory.shared_library_ranges(MAPS) == [
        (0x7F0000000000, 0x7F0000100000),
        (0x7F0000100000, 0x7F0000300000),
        (0x7F1000000000, 0x7F1008000000),
        (0x7F5000000000, 0x7F5000010000),
    ]


@glibc_only
def test_arena_limit_and_trim_reach_glibc() -> None:
    assert memory.limit_malloc_arenas(0) is False  # 0 = leave glibc's default alone
    assert memory.limit_malloc_arenas(8) is True  # the process default is 8 per core: no change in practice
    assert isinstance(memory.release_free_memory(), bool)


PAGE_OUT = r"""
import json, mmap, sys
import torch
from resnet_api.inference import memory

path = sys.argv[1]
with open(path, "rb") as f:  # a read-only mapping named like a shared library, every page touched
    mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
touched = sum(mapped[i] for i in range(0, len(mapped), mmap.PAGESIZE))

def resident_kb():
    inside, total = False, 0
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):
            inside = fields[-1] == path
        elif fields[0] == "Rss:" and inside:
            total += int(fields[1])
    return total

before = resident_kb()
advised = memory.page_out_shared_libraries()
after = resident_kb()
works = float((torch.ones(8, 8) @ torch.ones(8, 8)).sum())  # paged-out library code comes back on use
print(json.dumps({"before": before, "after": after, "advised": advised, "works": works}))
"""


@glibc_only
@linux_only
def test_paging_out_library_code_shrinks_resident_memory(tmp_path: Path) -> None:
    # A library file of its own: pages that another process (this one) also maps are never paged out.
    library = tmp_path / "libstartuponly.so"
    with library.open("wb") as f:
        f.write(os.urandom(16 << 20))
        f.flush()
        os.fsync(f.fileno())  # clean pages: the kernel drops clean file pages at once, dirty ones never here
    out = subprocess.run(
        [sys.executable, "-c", PAGE_OUT, str(library)], capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(out.stdout)
    if result["advised"] == 0:
        pytest.skip("the kernel refused MADV_PAGEOUT (Linux older than 5.4)")
    assert result["works"] == 512.0
    assert result["before"] >= 15_000  # 16 MB touched
    assert result["after"] < result["before"] / 4


def test_serving_does_not_import_scipy() -> None:
    """SciPy (about 45 MB resident) is needed only to train a classifier head, and is imported then."""
    code = "import sys, resnet_api.app; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
