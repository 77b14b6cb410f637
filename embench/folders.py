"""Whether a folder can be used: checked before work starts, so a path under a file or a
read-only disk is one clear message, not a traceback from the first write mid-run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def not_a_folder(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder: it, or a folder above it, is a file."""
    for above in (path, *path.parents):
        if above.exists():
            if above.is_dir():
                return None
            return "is a file" if above == path else f"is under {above}, which is a file"
    return None


def writable_folder_problem(path: Path) -> str | None:
    """Why no file can be written in folder ``path`` (created if missing), or None."""
    why = not_a_folder(path)
    if why:
        return why
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".embench-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
