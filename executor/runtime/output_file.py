"""Reading the agent's output file from the host, shared by the runtimes that see it."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def read_output(path: Path, cap: int) -> tuple[bytes | None, bool, int | None]:
    """``(data, truncated, size)`` of the output file at ``path``: at most ``cap`` bytes,
    whether it held more, and its size in bytes (the usage figure). ``(None, False, None)``
    when the agent wrote none.

    O_NOFOLLOW + S_ISREG: the agent controls this directory, and could plant a symlink to a
    host file or a FIFO that would block us.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None, False, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, False, None
        data = os.read(fd, cap + 1)
    finally:
        os.close(fd)
    size = max(st.st_size, len(data))
    return (data[:cap], True, size) if len(data) > cap else (data, False, size)
