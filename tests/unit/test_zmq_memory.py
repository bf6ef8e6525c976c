"""The zmq source's malloc tuning: a frame-sized block comes from the heap, not from a fresh mmap.

Checked in fresh processes (the setting is process-wide) through glibc's own count of mmapped blocks
(`mallinfo2().hblks`); skipped where the C library is not glibc 2.33 or later.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parents[2] / "daemon"

PROBE = r"""
import ctypes, sys
sys.path.insert(0, sys.argv[1])
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[2] == "tuned":
    from edgeinfer.transports.zmq.memory import keep_large_buffers_in_heap
    assert keep_large_buffers_in_heap() and keep_large_buffers_in_heap()  # once, then remembered
before = libc.mallinfo2().hblks
block = bytearray(921_600 * 4)  # four 640x480 bgr8 frames
print(libc.mallinfo2().hblks - before)
"""


def mmapped_blocks(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, str(DAEMON), mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or tuple(map(int, platform.libc_ver()[1].split(".")[:2]))
                    < (2, 33), reason="needs glibc >= 2.33 (mallinfo2)")
def test_frame_sized_blocks_come_from_the_heap_once_tuned():
    assert mmapped_blocks("default") == 1  # glibc's default: a block this size is its own mapping
    assert mmapped_blocks("tuned") == 0


def test_the_source_config_can_leave_malloc_alone():
    from edgeinfer.transports.zmq.schema import ZmqSourceConfig

    assert ZmqSourceConfig(id="a", endpoint="tcp://127.0.0.1:5555").reuse_buffers is True
    assert ZmqSourceConfig(id="a", endpoint="tcp://127.0.0.1:5555", reuse_buffers=False).reuse_buffers is False
