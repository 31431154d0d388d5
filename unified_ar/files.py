"""Writing files so that a reader (or a resumed run) never sees half of one."""
from __future__ import annotations

import os
from pathlib import Path

TMP_SUFFIX = ".tmp"  # of the temporary files write_atomic renames into place (a killed run's leftovers)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` beside ``path`` under a name holding the process id, flush it to disk, then
    rename it into place: a killed run leaves the old file or the new one, never a torn one, and
    ranks writing the same file at once never share a temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
