"""Plugin discovery and the name registry.

Plugins are modules (or objects) with ``@hookimpl`` functions, found through the ``embench``
entry-point group — first-party ones too. ``EMBENCH_LOAD_PLUGINS`` (comma list; empty = none)
restricts which load. A plugin that fails to import or whose hook raises is reported by name
and skipped; the others still work. Nothing is global that tests cannot reset: call
:func:`reset` (or use :func:`register_plugin` / :func:`unregister_plugin`).
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from embench import hookspecs
from embench.encoder import Encoder
from embench.errors import DuplicateNameError, EmbenchError, UnknownNameError, debug_enabled
from embench.task import Task

ENTRY_POINT_GROUP = "embench"
LOAD_ENV = "EMBENCH_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    name: str
    version: str | None = None
    distribution: str | None = None
    encoders: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Registry:
    """Encoders and tasks by name (and alias), with the plugin that registered each."""

    def __init__(self) -> None:
        self.encoders: dict[str, Encoder] = {}
        self.tasks: dict[str, Task] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.owner: dict[tuple[str, str], str] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.conflicts: list[DuplicateNameError] = []

    def add(self, kind: str, obj: Encoder | Task, plugin: str, aliases: tuple[str, ...]) -> None:
        """Register ``obj`` for ``plugin``. A name (or alias) already taken is a conflict: the
        first registration keeps it, this one is refused and recorded, and looking the name
        up fails until one plugin goes; every other name keeps working."""
        expected = Encoder if kind == "encoder" else Task
        if not isinstance(obj, expected):
            raise TypeError(f"register() for {kind}s takes a {expected.__name__} instance, "
                            f"got {type(obj).__name__}")
        table = self.encoders if kind == "encoder" else self.tasks
        info = self.plugins.setdefault(plugin, PluginInfo(plugin))
        for name in (obj.name, *aliases):
            if (kind, name) in self.owner:
                conflict = DuplicateNameError(kind, name, self.owner[(kind, name)], plugin)
                self.conflicts.append(conflict)
                refused = f"{kind} {obj.name!r} not registered: {conflict}"
                info.error = f"{info.error}; {refused}" if info.error else refused
                print(f"embench: warning: {conflict}", file=sys.stderr)
                return
        table[obj.name] = obj
        self.owner[(kind, obj.name)] = plugin
        for alias in aliases:
            self.aliases[(kind, alias)] = obj.name
            self.owner[(kind, alias)] = plugin
        (info.encoders if kind == "encoder" else info.tasks).append(obj.name)

    def check(self) -> None:
        """Raise the first duplicate-name conflict (``--encoders all`` cannot say which of two
        same-named encoders it means)."""
        if self.conflicts:
            raise self.conflicts[0]

    def encoder(self, name: str) -> Encoder:
        return self._get("encoder", self.encoders, name)

    def task(self, name: str) -> Task:
        return self._get("task", self.tasks, name)

    def _get(self, kind: str, table: dict, name: str):
        for conflict in self.conflicts:
            if (conflict.kind, conflict.name) == (kind, name):
                raise conflict
        name = self.aliases.get((kind, name), name)
        if name not in table:
            aliases = [a for k, a in self.aliases if k == kind]
            raise UnknownNameError(kind, name, list(table) + aliases, note=self.failures())
        return table[name]

    def failures(self) -> str:
        """Why a name may be missing: plugins that failed to load or register, and an
        ``EMBENCH_LOAD_PLUGINS`` that leaves plugins out."""
        notes = []
        failed = [f"{p.name!r} ({p.error})" for p in self.plugins.values() if p.error]
        if failed:
            notes.append("Plugins with errors (a name they register may be missing): "
                         + "; ".join(failed) + ". Fix or uninstall them; `embench plugins` "
                         "shows each one.")
        selected = os.environ.get(LOAD_ENV)
        if selected is not None:
            notes.append(f"{LOAD_ENV}={selected!r} loads only the plugins it names; unset it "
                         f"to load every installed plugin.")
        return "\n".join(notes)

    def resolve(self, kind: str, spec: str | list[str]) -> list[str]:
        """Expand ``"all"`` or a comma list into canonical names, failing on unknown ones."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [n.strip() for n in names if n.strip()]
        table = self.encoders if kind == "encoder" else self.tasks
        if names == ["all"]:
            self.check()
            return sorted(table)
        getter = self.encoder if kind == "encoder" else self.task
        return list(dict.fromkeys(getter(n).name for n in names))


_pm: pluggy.PluginManager | None = None
_load_errors: dict[str, PluginInfo] = {}
_versions: dict[str, tuple[str | None, str | None]] = {}
_registry: Registry | None = None


def _selected() -> set[str] | None:
    """Plugin names allowed by EMBENCH_LOAD_PLUGINS (None: all of them)."""
    raw = os.environ.get(LOAD_ENV)
    if raw is None:
        return None
    return {n.strip() for n in raw.split(",") if n.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, created and filled from entry points on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("embench")
        pm.add_hookspecs(hookspecs)
        eps = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        wanted = _selected()
        for name in sorted((wanted or set()) - set(eps)):
            print(f"embench: warning: {LOAD_ENV} names {name!r}, which no installed plugin "
                  f"provides (installed: {', '.join(sorted(eps)) or 'none'})", file=sys.stderr)
        for name, ep in sorted(eps.items()):
            if wanted is not None and name not in wanted:
                continue
            dist = getattr(ep, "dist", None)
            version = dist.version if dist else None
            dist_name = dist.metadata["Name"] if dist else None
            try:
                module = ep.load()
            except Exception as exc:  # report and skip: one broken plugin must not break all
                _load_errors[name] = PluginInfo(
                    name, version, dist_name, error=f"import failed: {type(exc).__name__}: {exc}"
                )
                print(f"embench: warning: plugin {name!r} failed to load and was skipped "
                      f"({type(exc).__name__}: {exc})", file=sys.stderr)
                if debug_enabled():
                    traceback.print_exception(exc, file=sys.stderr)
                continue
            pm.register(module, name=name)
            _load_errors.pop(name, None)
            _versions[name] = (version, dist_name)
        _pm = pm
    return _pm


def get_registry() -> Registry:
    """The registry of every loaded plugin's encoders and tasks (built once, then cached)."""
    global _registry
    if _registry is None:
        _registry = build_registry(get_plugin_manager())
    return _registry


def build_registry(pm: pluggy.PluginManager) -> Registry:
    registry = Registry()
    for plugin_name in pm.list_name_plugin():
        name = plugin_name[0]
        version, dist = _versions.get(name, (None, None))
        registry.plugins[name] = PluginInfo(name, version, dist)
    for kind, hook in (("encoder", pm.hook.register_encoders), ("task", pm.hook.register_tasks)):
        for impl in hook.get_hookimpls():  # registration order: entry points by name first
            plugin = impl.plugin_name

            def register(obj, aliases=(), _kind=kind, _plugin=plugin):
                registry.add(_kind, obj, _plugin, tuple(aliases))

            try:
                impl.function(register=register)
            except Exception as exc:
                info = registry.plugins.setdefault(plugin, PluginInfo(plugin))
                info.error = f"register_{kind}s failed: {type(exc).__name__}: {exc}"
                print(f"embench: warning: plugin {plugin!r} failed in register_{kind}s and its "
                      f"{kind}s were skipped ({type(exc).__name__}: {exc})", file=sys.stderr)
                if debug_enabled():
                    traceback.print_exception(exc, file=sys.stderr)
    for name, info in _load_errors.items():
        registry.plugins.setdefault(name, info)
    return registry


def register_plugin(plugin: object, name: str) -> None:
    """Register an in-process plugin (tests, notebooks); the registry is rebuilt on next use."""
    global _registry
    get_plugin_manager().register(plugin, name=name)
    _registry = None


def unregister_plugin(name: str) -> None:
    global _registry
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin, name=name)
    _registry = None


def reset() -> None:
    """Forget every loaded plugin; the next use loads entry points again."""
    global _pm, _registry
    _pm, _registry = None, None
    _load_errors.clear()
    _versions.clear()


__all__ = ["EmbenchError", "Registry", "get_plugin_manager", "get_registry", "register_plugin",
           "reset", "unregister_plugin"]
