"""Which device extraction and training run on, and how many threads decode for them: the
user's ``--device`` checked against what this torch build can run (an impossible choice fails
before any work, naming what to use instead), and the decode threads sized to the machine."""

from __future__ import annotations

import os

import torch

from embench.errors import EmbenchError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; an explicit choice this machine cannot run
    is an error saying what to use instead (``torch.device`` accepts names such as mps, xpu
    or meta even on builds that lack them, and fails only later, mid-run)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise EmbenchError(
            f"--device {spec!r} is not a device; use auto, cpu, cuda or cuda:N."
        ) from None
    if device.type == "cpu":
        return device
    if device.type == "meta":
        raise EmbenchError("--device meta holds shapes, not data, so no model can run on it; "
                           "use auto, cpu or cuda.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EmbenchError(
                f"--device {spec} asked for CUDA, but torch sees no GPU here (torch "
                f"{torch.__version__}). Use --device cpu, or install a CUDA build of torch."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise EmbenchError(f"--device {spec}: torch sees {count} GPU(s) here, numbered "
                               f"0 to {count - 1}; use auto, cuda or cuda:N with N < {count}.")
        return device
    backend = getattr(torch.backends, device.type, None) if device.type == "mps" else \
        getattr(torch, device.type, None)
    is_available = getattr(backend, "is_available", None)
    if not (callable(is_available) and is_available()):
        raise EmbenchError(f"--device {spec} is not available in this torch build (torch "
                           f"{torch.__version__}); use auto or cpu")
    return device


def default_num_workers(device: torch.device | None = None) -> int:
    """Decode threads: every core but one (the main thread launches the model's work); on the
    CPU at most 8, since the model itself needs cores there."""
    cores = os.cpu_count() or 1
    if device is not None and device.type == "cuda":
        return max(1, min(32, cores - 1))
    return max(0, min(8, cores - 1))
