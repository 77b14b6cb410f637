"""Where a result came from: versions, commit, device, time and command line."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from embench.results import Provenance


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the embench checkout, if it is one (dirty trees get a ``+dirty`` suffix)."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=where, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index or 0
        return f"{device} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({platform.processor() or platform.machine()})"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def collect(device: str, argv: list[str] | None = None) -> Provenance:
    import embench

    return Provenance(
        embench_version=embench.__version__,
        git_commit=git_commit(),
        python=platform.python_version(),
        torch=_version("torch"),
        transformers=_version("transformers"),
        platform=platform.platform(),
        device=device_name(device),
        started_at=now(),
        command_line=list(sys.argv if argv is None else argv),
        environment=embench_environment(),
    )


def embench_environment() -> dict[str, str]:
    """The ``EMBENCH_*`` environment variables set now (sorted)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("EMBENCH_")}
