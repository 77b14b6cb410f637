"""A progress bar for extraction: clips done, audio-seconds per second, ETA (rich, on stderr)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ExtractionProgress:
    """Context manager; call :meth:`advance` with the clips and audio seconds just finished."""

    def __init__(self, description: str, total_clips: int, enabled: bool = True):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("clips"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total_clips, rate="")
        self._audio_s = 0.0
        self._start = time.perf_counter()

    def __enter__(self) -> ExtractionProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def advance(self, clips: int, audio_s: float) -> None:
        self._audio_s += audio_s
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = f"{self._audio_s / elapsed:,.0f} audio-s/s"
        self._progress.update(self._task, advance=clips, rate=rate)

    @property
    def audio_seconds(self) -> float:
        return self._audio_s
