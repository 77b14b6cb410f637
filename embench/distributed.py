"""Sharded extraction across processes, GPUs and machines, launched by ``torchrun``.

``torchrun --nproc-per-node N -m embench run ...`` starts N copies of the same command; each
finds its rank in the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
For every (encoder, task) pair that needs embeddings, rank ``r`` extracts clips ``r, r + N,
r + 2N, ...`` into the shared cache folder, each rank writing its own shards; then all ranks
meet, and rank 0 alone reads the complete cache, evaluates and writes the result file. Pairs
that fine-tune the encoder run on rank 0 only. Across machines, add ``--nnodes``/``--node-rank``
/``--rdzv-endpoint`` as usual; ``--cache-dir`` must then be a folder every node can see.

The process group uses NCCL when the ranks have GPUs and gloo otherwise (so the CPU test runs
the same code). Every synchronisation goes through :meth:`Ranks.failures`, which also carries
each rank's failure, so one rank's error stops the pair on every rank instead of hanging them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from embench.errors import EmbenchError

#: Long enough for rank 0 to fine-tune an encoder while the others wait at the next pair.
TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self) -> tuple[int, int] | None:
        return (self.rank, self.world_size) if self.active else None

    def gather(self, value: Any) -> list[Any]:
        """Meet every rank; return each rank's ``value`` (picklable), in rank order."""
        if not self.active:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def gather_ok(self, error: str | None) -> list[str | None]:
        """Meet every rank; return each rank's error (``None`` for success)."""
        return self.gather(error)

    def failures(self, error: str | None) -> list[str]:
        """Meet every rank with this rank's error (``None``: success); return ``"rank r:
        reason"`` for each rank that failed, so all ranks take the same branch next."""
        return [f"rank {r}: {e}" for r, e in enumerate(self.gather_ok(error)) if e]

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def from_environment(device_spec: str) -> tuple[Ranks, str]:
    """Read torchrun's variables, join the process group and pick this rank's device.

    Returns the ranks and the device spec to use: ``cuda:LOCAL_RANK`` for ``auto``/``cuda``
    when GPUs exist, else the spec unchanged.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Ranks(), device_spec
    try:
        ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    except (KeyError, ValueError):
        raise EmbenchError("WORLD_SIZE is set but RANK is not: start distributed runs with "
                           "torchrun --nproc-per-node N -m embench run ...") from None
    import torch
    import torch.distributed as dist

    if device_spec in ("auto", "cuda") and torch.cuda.is_available():
        if ranks.local_rank >= torch.cuda.device_count():
            raise EmbenchError(f"local rank {ranks.local_rank} has no GPU (this node has "
                               f"{torch.cuda.device_count()}); lower --nproc-per-node.")
        device_spec = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(ranks.local_rank)
    backend = "nccl" if device_spec.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
    return ranks, device_spec
