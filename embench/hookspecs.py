"""The whole plugin contract: two hooks, each given a ``register`` callback by the core."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("embench")
hookimpl = pluggy.HookimplMarker("embench")


@hookspec
def register_encoders(register):
    """Register encoders: call ``register(encoder, aliases=())`` once per Encoder instance."""


@hookspec
def register_tasks(register):
    """Register tasks: call ``register(task, aliases=())`` once per Task instance."""
