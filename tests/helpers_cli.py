"""Run the embench CLI in-process and get its exit code, as a shell would see it."""

from __future__ import annotations

from embench.cli import main


def run_main(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
