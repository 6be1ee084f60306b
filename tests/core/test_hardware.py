"""keep_freed_memory: freed tensor memory stays in the process (no page faults to get it back)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.paths import ROOT
from yolact_lite.hardware import keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Allocate, touch and free a 96 MiB tensor a few times; print the minor page faults of the
# repeats (the first allocations fault their pages in either way).
REPEATS = """
import resource, sys, torch
from yolact_lite.hardware import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else None)
torch.set_num_threads(1)  # one thread, one malloc arena: the main one, which the settings govern
for _ in range(6):  # the heap grows to its size over the first few (seen up to six)
    torch.ones(24 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    torch.ones(24 * 2**20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env=None) -> tuple:
    proc = subprocess.run([sys.executable, "-c", REPEATS, mode], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    applied, faults = proc.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_tensor_memory_is_reused_without_page_faults():
    pages = 96 * 2**20 // 4096  # what one repeat faults in when the memory went back to the kernel
    applied, kept = _faults("keep")
    default = _faults("default")[1]
    assert applied == "True"
    assert default >= 3 * pages  # glibc's default: each repeat maps fresh pages
    assert kept < pages // 10


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_a_users_allocator_settings_stand(monkeypatch):
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "0"}
    applied, _ = _faults("keep", env)
    assert applied == "False"
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so.2")
    assert keep_freed_memory() is False
