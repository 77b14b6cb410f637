"""Checks of the command line's inputs, made before any work starts: each bad value is refused
with a message naming the flag (or the environment variable it came from) and what to give
instead, so a typo never costs a run half done.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from embench.errors import EmbenchError
from embench.folders import not_a_folder, writable_folder_problem


def parse_seeds(value: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``1,5,9`` names them."""
    items = value.split(",")
    if len(items) > 1 and not all(s.strip() for s in items):
        raise click.BadParameter(f"{value!r} has an empty item: give a count (3) or a comma "
                                 f"list with a seed between every two commas (0,1,2)")
    try:
        seeds = [int(s) for s in items] if len(items) > 1 else list(range(int(value)))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a count (3) or a comma list (0,1,2)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise click.BadParameter(f"{value!r}: need at least one seed and no repeats")
    return seeds


def parse_batch_size(value: str | int) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        size = 0
    if size < 1:
        raise click.BadParameter(f"{value!r}: give a positive number of windows, or auto")
    return size


def check_captioner(value: str | None) -> str | None:
    """A path-like ``--captioner`` must be a folder with a saved model now, not after every
    extraction."""
    if value is None:
        return None
    from embench.caption_model import local_captioner

    try:
        local = local_captioner(value)
    except EmbenchError as exc:
        raise click.BadParameter(str(exc)) from None
    if local is not None and not (local / "config.json").is_file():
        raise click.BadParameter(f"{local} holds no model saved with save_pretrained (no "
                                 f"config.json); give such a folder, a hub id, or 'scratch'")
    return str(local.resolve()) if local else value


def check_names(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``-e ""`` or ``-t ,`` names nothing: refuse it rather than run an empty benchmark."""
    if not any(n.strip() for n in value.split(",")):
        kind = "encoder" if param.name == "encoders" else "task"
        raise click.UsageError(f"--{param.name} is empty: give {kind} names or 'all' "
                               f"(`embench list` shows them)", ctx)
    return value


def positive_finite(ctx: click.Context, param: click.Parameter,
                    value: float | None) -> float | None:
    """``> 0`` alone lets nan and inf through; both would end in a crash mid-run."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value}: give a finite number greater than 0")
    return value


def from_env(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` took its value from its environment variable."""
    from click.core import ParameterSource

    return ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT


def check_data_dir(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The data folder must be (or become) a folder; it need not be writable (a read-only
    folder that already holds the data is fine). Says so when EMBENCH_DATA set it."""
    why = not_a_folder(Path(value).expanduser())
    if why:
        if from_env(ctx, param.name):
            raise click.BadParameter(f"EMBENCH_DATA={value} {why}; set EMBENCH_DATA to a "
                                     f"folder (or unset it), or pass --data-dir")
        raise click.BadParameter(f"{value} {why}; give a folder")
    return value


def check_cache_dir(value: str, from_env: bool) -> None:
    """The embedding cache is written during the run: create it and write a file there now,
    so an unusable one fails before any work, not in the middle of extraction."""
    why = writable_folder_problem(Path(value).expanduser())
    if why:
        where = "; set by EMBENCH_CACHE" if from_env else ""
        raise EmbenchError(f"cannot write the embedding cache at {value} ({why}{where}); "
                           f"choose --cache-dir or EMBENCH_CACHE")


def reason(exc: OSError, target: str | Path) -> str:
    """An OSError in words; "File exists" from makedirs means a folder above is a file."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        folder = Path(target).expanduser().parent
        why = not_a_folder(folder)
        if why:
            return f"{folder} {why}"
    return exc.strerror or str(exc)
