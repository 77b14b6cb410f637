"""Error types the CLI turns into one clear message (no traceback unless EMBENCH_DEBUG=1).

Every error a user can cause or fix derives from :class:`EmbenchError` and says what to do next.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path


def debug_enabled() -> bool:
    """``EMBENCH_DEBUG=1``: show tracebacks, not just the one-line messages."""
    return os.environ.get("EMBENCH_DEBUG", "") not in ("", "0")


class EmbenchError(Exception):
    """A problem the user can fix; ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class UnknownNameError(EmbenchError):
    """An encoder, task or protocol name that nothing registered."""

    def __init__(self, kind: str, name: str, available: Iterable[str], of: str = "",
                 note: str = ""):
        """``of``: whose name it is (``"task 'gtzan'"`` for a protocol); ``note``: a last
        paragraph, e.g. which plugins failed to load (their names would be missing)."""
        self.kind, self.name = kind, name
        self.available = sorted(available)
        by_lower = {a.lower(): a for a in self.available}  # MELSPEC finds melspec
        close = [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower),
                                                                 n=3, cutoff=0.5)]
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = ", ".join(self.available) or "(none registered)"
        where = f" for {of}" if of else ""
        super().__init__(
            f"Unknown {kind} {name!r}{where}.{hint}\nAvailable {kind}s: {listing}\n"
            f"Run `embench list` for details or `embench plugins` to see what is installed."
            + (f"\n{note}" if note else "")
        )


class DuplicateNameError(EmbenchError):
    """Two plugins (or one, twice) registered the same encoder or task name."""

    def __init__(self, kind: str, name: str, first_plugin: str, second_plugin: str):
        self.kind, self.name = kind, name
        self.plugins = (first_plugin, second_plugin)
        if first_plugin == second_plugin:
            message = (f"Plugin {first_plugin!r} registers the {kind} name {name!r} twice "
                       f"(names and aliases share one namespace); register each name once.")
        else:
            message = (f"The {kind} name {name!r} is registered by two plugins: "
                       f"{first_plugin!r} and {second_plugin!r}. Uninstall one of them, or "
                       f"choose which to load with EMBENCH_LOAD_PLUGINS (a comma-separated "
                       f"list of plugin names).")
        super().__init__(message)


class MissingDataError(EmbenchError):
    """A task's data is not where it was looked for; the message shows the expected layout."""


class MissingWeightsError(EmbenchError):
    """An encoder's weights are not available offline; the message says how to fetch them."""


class AudioDecodeError(EmbenchError):
    """One audio file is empty, corrupt or undecodable.

    The runner records the clip as skipped (with ``reason``) and carries on.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"Cannot decode {self.path}: {reason}")

