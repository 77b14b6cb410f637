"""Pick the fastest of several equivalent inference routes by timing them on the first real
batch, on CUDA: ``auto`` for ``EMBENCH_UNFOLD_CONV``, ``EMBENCH_FEATURE_ENCODER``,
``EMBENCH_FFN`` and ``EMBENCH_ENCODER_LAYER``.

Why: which route is fastest for a part of the model (cuDNN's convolution, GEMMs on a
channels-last buffer, a fused Triton kernel; the positional convolution by FFT, unfold or
cuDNN) depends on the card, the batch and the library versions, and the few minutes of GPU time
this project gets cannot settle it for every card. So, like ``torch.backends.cudnn.benchmark``
for convolution algorithms, a :class:`RouteChoice` times every candidate on the first batch of
at least :data:`MIN_BATCH` windows of each input shape (the batch size excluded: the choice is
made once, on the batch-size probe's large batch) and keeps the fastest.

A candidate is only eligible if its output agrees with the default candidate's on that batch
(relative L2 error under :data:`AGREEMENT`): a route that is fast but wrong on some card is
rejected and said so, never chosen. A candidate that raises (Triton missing, a kernel that
does not compile) is rejected with its error; out-of-memory propagates, so the batch-size probe
backs off as usual. Off CUDA, and while ``torch.compile`` traces, the default candidate runs
untimed: CPU runs, and the tests, take one fixed route.

:meth:`RouteChoice.notes` says what was chosen and the times behind it; extraction logs them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Every environment variable that picks an inference route of the wav2vec2-style encoders
#: (read when a model loads); scripts and tests that set routes clear these first.
ROUTE_VARIABLES = ("EMBENCH_UNFOLD_CONV", "EMBENCH_FIRST_LAYER", "EMBENCH_FEATURE_ENCODER",
                   "EMBENCH_FFN", "EMBENCH_ENCODER_LAYER")
#: Batches smaller than this run the default and decide nothing (timing a tiny warm-up batch
#: would pick the route with the least launch overhead, not the fastest).
MIN_BATCH = 8
#: Timed runs per candidate after its warm-up (which compiles and autotunes); the median counts.
REPEATS = 3
#: Largest relative L2 difference from the default's output that still counts as "the same
#: result": bf16 routes of MERT-95M's CNN differ from each other by about 1e-2 (and from fp32
#: by as much); a wrong kernel is off by order 1.
AGREEMENT = {"low": 3e-2, "fp32": 1e-3}


def relative_error(out: torch.Tensor, reference: torch.Tensor) -> float:
    """``||out - reference|| / ||reference||`` in float64 (``inf`` when shapes differ)."""
    if out.shape != reference.shape:
        return float("inf")
    ref = reference.double()
    return ((out.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def cuda_median_seconds(run: Callable[[], Any], repeats: int = REPEATS) -> float:
    """Median wall time of ``run()`` on the current CUDA stream, by CUDA events."""
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


class RouteChoice:
    """Candidates ``name -> f(x, *context)`` computing the same function of ``x``; call the
    instance as the route. ``what`` names the part of the model in :meth:`notes`."""

    #: Device types whose calls are timed (tests add "cpu" with a fake timer).
    timed_devices: tuple[str, ...] = ("cuda",)

    def __init__(self, what: str, candidates: Mapping[str, Callable[..., torch.Tensor]],
                 default: str,
                 timer: Callable[[Callable[[], Any]], float] | None = None) -> None:
        if default not in candidates:
            raise ValueError(f"default route {default!r} is not among {list(candidates)}")
        self.what, self.candidates, self.default = what, dict(candidates), default
        self.timer = timer  # None: cuda_median_seconds, looked up when a choice is made
        self.chosen: dict[tuple, str] = {}
        self._notes: dict[tuple, str] = {}

    def __call__(self, x: torch.Tensor, *context: Any) -> torch.Tensor:
        import torch

        key = (tuple(x.shape[1:]), x.dtype, torch.is_autocast_enabled(x.device.type))
        name = self.chosen.get(key)
        if name is None:
            if (x.device.type not in self.timed_devices or torch.compiler.is_compiling()
                    or len(self.candidates) == 1 or x.shape[0] < MIN_BATCH):
                name = self.default
            else:
                name = self._decide(key, x, context)
        return self.candidates[name](x, *context)

    def _decide(self, key: tuple, x: torch.Tensor, context: tuple) -> str:
        import torch

        reference = self.candidates[self.default](x, *context)
        low = reference.dtype in (torch.bfloat16, torch.float16)
        limit = AGREEMENT["low" if low else "fp32"]
        timer = self.timer or cuda_median_seconds
        times: dict[str, float] = {}
        rejected: dict[str, str] = {}
        for name, route in self.candidates.items():
            try:
                if name != self.default:  # its warm-up run is the agreement check
                    error = relative_error(route(x, *context), reference)
                    if not error <= limit:
                        rejected[name] = f"differs from {self.default} by {error:.1e}"
                        continue
                times[name] = timer(lambda route=route: route(x, *context))
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:  # one broken route must not stop the run
                if name == self.default:
                    raise
                rejected[name] = f"{type(exc).__name__}: {exc}"
        best = min(times, key=times.__getitem__)
        self.chosen[key] = best
        timed = ", ".join(f"{n} {1e3 * t:.2f} ms" for n, t in sorted(times.items(),
                                                                     key=lambda kv: kv[1]))
        rejects = "".join(f"; rejected {n}: {why}" for n, why in rejected.items())
        self._notes[key] = (f"{self.what}: {best} for {x.shape[0]} x {list(x.shape[1:])} "
                            f"{str(x.dtype).removeprefix('torch.')} ({timed}{rejects})")
        return best

    def notes(self) -> list[str]:
        """One line per decision: the choice, each candidate's time, each rejection."""
        return list(self._notes.values())


def attach(model: torch.nn.Module, choice: RouteChoice) -> RouteChoice:
    """Keep ``choice`` on ``model`` so that :func:`notes_of` finds it."""
    choices = model.__dict__.setdefault("_embench_route_choices", [])
    choices.append(choice)
    return choice


def notes_of(model: torch.nn.Module | None) -> list[str]:
    """Every decision of every :class:`RouteChoice` attached to ``model``."""
    choices = [] if model is None else model.__dict__.get("_embench_route_choices", [])
    return [line for choice in choices for line in choice.notes()]
