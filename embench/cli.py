"""The ``embench`` command line: run, list, plugins, leaderboard, submit, plot.

Errors a user can fix (unknown names, missing data or weights) print one message that says what
to do and exit with code 2, no traceback (``EMBENCH_DEBUG=1`` shows it). ``run`` exits 1 when
some (encoder, task) pairs failed; their reasons are in the result file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from embench import cli_checks as checks
from embench import run_summary as summary
from embench.errors import EmbenchError, debug_enabled
from embench.precision import PRECISIONS

DEFAULT_ENCODERS = "melspec"
DEFAULT_TASKS = "toy-genres,toy-captions"


def _default_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "embench"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="embench")
def cli() -> None:
    """Benchmark audio embedding models on music tasks."""


@cli.command()
@click.option("--encoders", "-e", default=DEFAULT_ENCODERS, show_default=True,
              callback=checks.check_names, help="Comma list of encoder names, or 'all'.")
@click.option("--tasks", "-t", default=DEFAULT_TASKS, show_default=True,
              callback=checks.check_names, help="Comma list of task names, or 'all'.")
@click.option("--protocol", "-p", default=None, help="Protocol for every task (default: each "
              "task's own default, e.g. probe).")
@click.option("--seeds", default="3", show_default=True, help="Seed count, or a comma list.",
              callback=lambda ctx, param, value: checks.parse_seeds(value))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--weights", type=click.Choice(["pretrained", "random"]), default="pretrained",
              show_default=True, help="'random': same architecture, seeded random init.")
@click.option("--weights-dir", type=click.Path(file_okay=False), default=None,
              help="Local folder with model checkpoints (instead of the hub cache).")
@click.option("--frame-rate", type=float, default=1.0, callback=checks.positive_finite,
              show_default=True, help="Frames per second of the cached embeddings.")
@click.option("--window-s", type=float, default=None, callback=checks.positive_finite,
              help="Cut audio into windows of this many seconds (default: each encoder's own).")
@click.option("--hop-s", type=float, default=None, callback=checks.positive_finite,
              help="Seconds between window starts (default: the window length; at most the "
                   "window).")
@click.option("--batch-size", default="auto", show_default=True,
              callback=lambda c, p, v: checks.parse_batch_size(v),
              help="Windows per forward pass, or 'auto': as many as fit in free GPU memory "
                   "(halved on out-of-memory); on the CPU one or two.")
@click.option("--compile", "compile_", is_flag=True, help="Run encoders through torch.compile "
              "(pays off on long GPU runs).")
@click.option("--precision", type=click.Choice(PRECISIONS),
              default="auto", show_default=True, help="Frozen extraction's arithmetic: auto is "
              "fp32 on the CPU; on CUDA bf16 weights where the encoder allows it, else bf16 "
              "autocast over fp32 weights. bf16 also falls back to bf16-autocast per encoder. "
              "Fine-tuning always keeps fp32 weights.")
@click.option("--num-workers", type=click.IntRange(min=0), default=None,
              help="Decode threads (default: cores - 1; at most 8 on the CPU).")
@click.option("--data-dir", type=click.Path(), envvar="EMBENCH_DATA",
              callback=checks.check_data_dir,
              default=lambda: str(_default_home() / "data"), show_default="$EMBENCH_DATA or "
              "~/.cache/embench/data")
@click.option("--cache-dir", type=click.Path(), envvar="EMBENCH_CACHE",
              default=lambda: str(_default_home() / "cache"), show_default="$EMBENCH_CACHE or "
              "~/.cache/embench/cache")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default="embench-results",
              show_default=True, help="Where the result JSON and leaderboard.md go.")
@click.option("--captioner", default=None, callback=lambda c, p, v: checks.check_captioner(v),
              help="The T5 of captioning protocols: a hub id read from the local Hugging Face "
                   "cache, a folder saved with save_pretrained, or 'scratch' (a small T5 "
                   "trained from scratch). Default: each task's own (t5-small for musiccaps, "
                   "scratch for toy-captions).")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Continue the run of this result file (e.g. one stopped with Ctrl-C): same "
                   "settings, id and file; only the pairs it has not scored are run.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def run(encoders, tasks, protocol, seeds, device, weights, weights_dir, frame_rate, window_s,
        hop_s, batch_size, compile_, precision, num_workers, captioner, data_dir, cache_dir,
        output_dir, resume, progress) -> None:
    """Embed each task's audio with each encoder and score it. With no flags: the offline
    toy suite with the melspec baseline."""
    from embench.devices import resolve_device
    from embench.plugins import get_registry
    from embench.results import RunSpec
    from embench.runner import run as run_spec

    registry = get_registry()
    ctx = click.get_current_context()
    if resume:
        resumed = (_resumed(ctx, Path(resume)), Path(resume))
        spec = resumed[0].spec
        encoder_names = registry.resolve("encoder", spec.encoders)
        registry.resolve("task", spec.tasks)
        output_dir = str(Path(resume).parent)
    else:
        resumed = None
        encoder_names = registry.resolve("encoder", encoders)
        spec = RunSpec(
            encoders=encoder_names, tasks=registry.resolve("task", tasks),
            protocol=protocol, seeds=seeds, device=device, weights=weights,
            weights_path=weights_dir, frame_rate=frame_rate, window_s=window_s, hop_s=hop_s,
            batch_size=batch_size, compile=compile_, precision=precision,
            num_workers=num_workers, captioner=captioner, data_dir=str(data_dir),
            cache_dir=str(cache_dir), output_dir=str(output_dir),
        )
    resolve_device(spec.device)  # a device this torch cannot run on fails now, not mid-run
    checks.check_cache_dir(spec.cache_dir, not resume and checks.from_env(ctx, "cache_dir"))
    result, path = run_spec(spec, registry, argv=sys.argv, resume=resumed,
                            log=lambda m: click.echo(m, err=True), show_progress=progress)
    if path is None:  # a worker rank of a torchrun launch: rank 0 reports
        return
    summary.print_table(result)
    for line in summary.gap_lines(result):
        click.echo(line)
    summary.print_skipped(result, path)
    click.echo(f"Result: {path}")
    board = Path(output_dir) / "leaderboard.md"
    from embench.leaderboard import write_markdown
    from embench.result_files import load_results

    # another file in the folder that cannot be read costs this run nothing: it is named
    write_markdown(load_results([Path(output_dir)], strict=False), board)
    click.echo(f"Leaderboard: {board}")
    if result.failures:
        click.echo(f"{len(result.failures)} pair(s) failed; reasons are in {path}", err=True)
        sys.exit(1)


def _resumed(ctx: click.Context, path: Path):
    """The result of the run ``--resume`` continues, ready to go on; other run settings on the
    command line are refused: the scores of one run share one set of settings."""
    from click.core import ParameterSource

    from embench.result_files import load_result_file
    from embench.runner import resumable

    given = [f"--{p.name.rstrip('_').replace('_', '-')}" for p in ctx.command.params
             if p.name not in ("resume", "progress")
             and ctx.get_parameter_source(p.name) is ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--resume continues the run with the settings it was started "
                               f"with; drop {', '.join(given)}.", ctx)
    return resumable(load_result_file(path), path)


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """List the registered encoders and tasks with their metadata."""
    from embench.plugins import get_registry

    registry = get_registry()
    encoders = {n: e.info.as_dict() | {"plugin": registry.owner[("encoder", n)]}
                for n, e in sorted(registry.encoders.items())}
    tasks = {n: t.info.as_dict() | {"plugin": registry.owner[("task", n)]}
             for n, t in sorted(registry.tasks.items())}
    conflicts = [str(c) for c in registry.conflicts]
    if as_json:
        click.echo(json.dumps({"encoders": encoders, "tasks": tasks, "conflicts": conflicts},
                              indent=2))
        return
    click.echo("Encoders:")
    for n, i in encoders.items():
        click.echo(f"  {n:<24} {i['sample_rate']} Hz, {i['num_layers']} layers "
                   f"[{i['plugin']}] {i['description']}")
    click.echo("Tasks:")
    for n, i in tasks.items():
        click.echo(f"  {n:<24} {i['main_score']}; protocols {', '.join(i['protocols'])} "
                   f"[{i['plugin']}] {i['description']}")
    for conflict in conflicts:
        click.echo(f"CONFLICT: {conflict}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Show each loaded plugin: name, version and what it registers."""
    from embench.plugins import get_registry

    registry = get_registry()
    rows = [p.as_dict() for _, p in sorted(registry.plugins.items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for p in rows:
        what = ", ".join([f"encoder {e}" for e in p["encoders"]] +
                         [f"task {t}" for t in p["tasks"]]) or "nothing"
        status = f"  ERROR: {p['error']}" if p["error"] else ""
        click.echo(f"{p['name']} {p['version'] or '(no version)'}: {what}{status}")
    for conflict in registry.conflicts:
        click.echo(f"CONFLICT: {conflict}")


class _LeaderboardGroup(click.Group):
    """``build`` and ``check`` are subcommands; anything else keeps the original meaning,
    ``embench leaderboard [PATHS]... [-o FILE]`` (the hidden ``render`` subcommand)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["render", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=_LeaderboardGroup)
def leaderboard() -> None:
    """Leaderboards. `embench leaderboard [PATHS]... [-o FILE]` renders markdown from result
    files or folders (default: embench-results); `build` and `check` keep the published
    leaderboard folder (results/, README.md, index.html, charts/) in step with its results."""


_board_dir = click.option("--leaderboard-dir", type=click.Path(file_okay=False),
                          default="leaderboard", show_default=True,
                          help="The published leaderboard folder.")


@leaderboard.command(name="build")
@_board_dir
def leaderboard_build(leaderboard_dir: str) -> None:
    """Validate leaderboard/results/*.json and write README.md, index.html and charts/."""
    from embench.leaderboard_build import build

    report = build(Path(leaderboard_dir))
    for path in report.written:
        click.echo(f"wrote {path}")
    for path in report.removed:
        click.echo(f"removed {path}")
    if not report.written and not report.removed:
        click.echo(f"{leaderboard_dir} is up to date.")


@leaderboard.command(name="check")
@_board_dir
def leaderboard_check(leaderboard_dir: str) -> None:
    """Fail (exit 1) when the pages or charts are out of date with the result files."""
    from embench.leaderboard_build import check

    problems = check(Path(leaderboard_dir))
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{leaderboard_dir} is up to date with its result files.")


@leaderboard.command(name="render", hidden=True)
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of printing.")
def leaderboard_render(paths: tuple[str, ...], output: str | None) -> None:
    """Render a markdown leaderboard from result files or folders (default: embench-results)."""
    from embench.leaderboard import render_markdown, write_markdown
    from embench.result_files import load_results

    sources = [Path(p) for p in paths] or [Path("embench-results")]
    if not paths and not sources[0].exists():
        raise EmbenchError("No results in ./embench-results yet: run `embench run` first, or "
                           "pass result files or folders: `embench leaderboard PATH...`.")
    runs = load_results(sources)
    if not runs:
        raise EmbenchError(f"Nothing to render: no usable embench result file in "
                           f"{', '.join(map(str, sources))} (any left out are named above). "
                           f"Pass the run-*.json files `embench run` wrote, or their folder.")
    if output:
        try:
            write_markdown(runs, Path(output))
        except OSError as exc:
            raise EmbenchError(f"cannot write {output}: {checks.reason(exc, output)}; choose "
                               f"another -o") from None
        click.echo(f"Leaderboard: {output}")
    else:
        click.echo(render_markdown(runs))


@cli.command()
@click.argument("result_file", type=click.Path(dir_okay=False))
@_board_dir
def submit(result_file: str, leaderboard_dir: str) -> None:
    """Validate a run's result file, copy it into the leaderboard's results/ and rebuild the
    page; then open a pull request with the changed files (see CONTRIBUTING.md)."""
    from embench.submit import submit_result

    done = submit_result(Path(result_file), Path(leaderboard_dir))
    if done.added:
        click.echo(f"Submitted {result_file} as {done.path} ({len(done.run.results)} measured "
                   f"result(s), {len(done.run.failures)} failed pair(s)).")
    else:
        click.echo(f"Run {done.run.run_id} is already on the leaderboard as {done.path}.")
    for path in done.report.written:
        click.echo(f"wrote {path}")
    click.echo("Next: commit these files and open a pull request (see CONTRIBUTING.md).")


@cli.command()
@click.argument("result_file", type=click.Path(dir_okay=False))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False), default=None,
              help="Where the PNGs go (default: run-<id>-plots/ next to RESULT_FILE).")
def plot(result_file: str, output_dir: str | None) -> None:
    """Draw PNGs for each classification result of a run: test confusion matrix, validation
    accuracy by layer, and a PCA of cached clip means (needs matplotlib: embench[plots])."""
    from embench.plots import plot_run

    try:
        written = plot_run(Path(result_file), Path(output_dir) if output_dir else None,
                           log=lambda m: click.echo(m, err=True))
    except OSError as exc:  # plot_run checks the folder first; this is e.g. a full disk
        target = exc.filename or output_dir or "the plots"
        raise EmbenchError(f"cannot write {target}: {exc.strerror or exc}; choose another "
                           f"-o") from None
    for path in written:
        click.echo(str(path))


@cli.group()
def data() -> None:
    """Get datasets whose audio embench cannot ship (e.g. MusicCaps, from YouTube)."""


@data.command(name="musiccaps")
@click.option("--data-dir", type=click.Path(), envvar="EMBENCH_DATA",
              callback=checks.check_data_dir,
              default=lambda: str(_default_home() / "data"), show_default="$EMBENCH_DATA or "
              "~/.cache/embench/data")
@click.option("--download", is_flag=True, help="Fetch missing clips from YouTube (needs "
              "embench[download] and ffmpeg).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Stop after this many download attempts.")
@click.option("--retry-failed", is_flag=True, help="Retry videos that failed before.")
def data_musiccaps(data_dir: str, download: bool, limit: int | None,
                   retry_failed: bool) -> None:
    """Show how many MusicCaps clips are present and how to get the rest; with --download,
    fetch and cut them (resumable; unavailable videos are remembered)."""
    from embench.musiccaps_fetch import run as run_fetch

    click.echo(run_fetch(Path(data_dir), download, limit, retry_failed,
                         log=lambda m: click.echo(m, err=True)))


def main(argv: list[str] | None = None) -> None:
    """Entry point: turn EmbenchError into a clean message and exit code."""
    try:
        cli.main(args=argv, prog_name="embench", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EmbenchError as exc:
        if debug_enabled():  # the traceback too, and still the error's own exit code
            import traceback

            traceback.print_exc()
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
