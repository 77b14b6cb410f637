"""The plugin contract: discovery, restriction, isolation of broken plugins, duplicates."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from embench import hookimpl, plugins
from embench.errors import DuplicateNameError, UnknownNameError
from tests.fakes import FakePlugin, SpectralEncoder, ToneTask


def test_first_party_plugins_load_through_entry_points():
    registry = plugins.get_registry()
    assert "melspec" in registry.encoders
    info = registry.plugins["melspec"]
    assert info.version and info.distribution == "embench"
    assert info.encoders == ["melspec"]


def test_load_plugins_env_warns_about_unknown_names(monkeypatch, capsys):
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "melspec,melspek")
    assert list(plugins.get_registry().plugins) == ["melspec"]
    assert "names 'melspek', which no installed plugin provides" in capsys.readouterr().err


def test_load_plugins_env_restricts(monkeypatch):
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "melspec")
    registry = plugins.get_registry()
    assert list(registry.plugins) == ["melspec"]
    plugins.reset()
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "")
    assert plugins.get_registry().plugins == {}


def _install_broken_entry_point(tmp_path, monkeypatch) -> None:
    """A real distribution on sys.path whose entry point raises on import."""
    (tmp_path / "broken_embench_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    dist = tmp_path / "broken_embench_plugin-9.9.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-embench-plugin\n"
                                   "Version: 9.9\n")
    (dist / "entry_points.txt").write_text("[embench]\nbroken = broken_embench_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_plugin_raising_on_import_is_reported_and_skipped(tmp_path, monkeypatch, capsys):
    _install_broken_entry_point(tmp_path, monkeypatch)
    registry = plugins.get_registry()
    assert "melspec" in registry.encoders  # the rest still work
    broken = registry.plugins["broken"]
    assert "boom at import" in broken.error and broken.version == "9.9"
    assert "plugin 'broken' failed to load" in capsys.readouterr().err
    sys.modules.pop("broken_embench_plugin", None)


def test_plugin_raising_in_hook_is_reported_and_skipped(fake_plugin, capsys):
    class Exploding:
        @hookimpl
        def register_encoders(self, register):
            raise ValueError("bad config")

    plugins.register_plugin(Exploding(), name="exploding")
    registry = plugins.get_registry()
    assert "fake-spectral" in registry.encoders and "melspec" in registry.encoders
    assert "bad config" in registry.plugins["exploding"].error
    assert "'exploding' failed in register_encoders" in capsys.readouterr().err


def test_duplicate_names_name_both_plugins(fake_plugin):
    plugins.register_plugin(FakePlugin(SpectralEncoder(), ToneTask()), name="copycat")
    registry = plugins.get_registry()
    with pytest.raises(DuplicateNameError) as err:
        registry.encoder("fake-spectral")
    assert "'fake'" in str(err.value) and "'copycat'" in str(err.value)
    assert "EMBENCH_LOAD_PLUGINS" in str(err.value)


def test_a_conflict_blocks_only_the_contested_name(fake_plugin, capsys):
    """The first registration keeps the name; the copy is refused and recorded; looking the
    contested name up fails (no silent choice), every other name still resolves."""
    class Copycat:
        @hookimpl
        def register_encoders(self, register):
            register(SpectralEncoder())  # fake-spectral again
            other = SpectralEncoder()
            other.info = replace(other.info, name="copycat-spectral")
            register(other)

    plugins.register_plugin(Copycat(), name="copycat")
    registry = plugins.get_registry()
    assert registry.owner[("encoder", "fake-spectral")] == "fake"
    assert registry.plugins["copycat"].encoders == ["copycat-spectral"]
    assert "'fake-spectral' not registered" in registry.plugins["copycat"].error
    assert registry.resolve("encoder", "melspec,copycat-spectral") == ["melspec",
                                                                     "copycat-spectral"]
    assert registry.task("fake-tones").name == "fake-tones"
    with pytest.raises(DuplicateNameError):
        registry.resolve("encoder", "fake-spectral")
    with pytest.raises(DuplicateNameError):
        registry.resolve("encoder", "all")
    assert "registered by two plugins: 'fake' and 'copycat'" in capsys.readouterr().err


def test_one_plugin_registering_a_name_twice_is_told_so(capsys):
    class Twice:
        @hookimpl
        def register_encoders(self, register):
            register(SpectralEncoder())
            register(SpectralEncoder())

    plugins.register_plugin(Twice(), name="twice")
    with pytest.raises(DuplicateNameError, match="Plugin 'twice' registers the encoder name "
                                                 "'fake-spectral' twice"):
        plugins.get_registry().encoder("fake-spectral")


def test_unknown_name_points_at_plugins_that_failed(tmp_path, monkeypatch, capsys):
    _install_broken_entry_point(tmp_path, monkeypatch)
    with pytest.raises(UnknownNameError) as err:
        plugins.get_registry().encoder("broken-encoder")
    assert "Plugins with errors" in str(err.value) and "'broken'" in str(err.value)
    assert "boom at import" in str(err.value)
    sys.modules.pop("broken_embench_plugin", None)


def test_debug_shows_where_a_plugin_failed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EMBENCH_DEBUG", "1")
    _install_broken_entry_point(tmp_path, monkeypatch)
    plugins.get_registry()
    err = capsys.readouterr().err
    assert "Traceback" in err and "broken_embench_plugin.py" in err
    sys.modules.pop("broken_embench_plugin", None)


def test_unknown_name_matches_regardless_of_case_and_names_load_plugins(monkeypatch):
    with pytest.raises(UnknownNameError, match="Did you mean 'melspec'"):
        plugins.get_registry().encoder("MELSPEC")
    plugins.reset()
    monkeypatch.setenv("EMBENCH_LOAD_PLUGINS", "nosuch")
    with pytest.raises(UnknownNameError, match="EMBENCH_LOAD_PLUGINS='nosuch' loads only the "
                                               "plugins it names; unset it"):
        plugins.get_registry().encoder("melspec")


def test_unknown_name_suggests_close_matches():
    registry = plugins.get_registry()
    with pytest.raises(UnknownNameError) as err:
        registry.encoder("melspek")
    message = str(err.value)
    assert "Did you mean 'melspec'" in message and "Available encoders: " in message
    assert err.value.exit_code == 2


def test_aliases_and_all():
    class Aliased:
        @hookimpl
        def register_encoders(self, register):
            register(SpectralEncoder(), aliases=("spec",))

    plugins.register_plugin(Aliased(), name="aliased")
    registry = plugins.get_registry()
    assert registry.encoder("spec").name == "fake-spectral"
    assert registry.resolve("encoder", "spec,fake-spectral") == ["fake-spectral"]
    assert set(registry.resolve("encoder", "all")) >= {"fake-spectral", "melspec"}


def test_register_rejects_wrong_type(capsys):
    class Wrong:
        @hookimpl
        def register_encoders(self, register):
            register("not an encoder")

    plugins.register_plugin(Wrong(), name="wrong")
    registry = plugins.get_registry()
    assert "takes a Encoder instance" in registry.plugins["wrong"].error


def test_unregister_and_reset_leave_no_trace(fake_plugin):
    assert "fake-spectral" in plugins.get_registry().encoders
    plugins.unregister_plugin("fake")
    assert "fake-spectral" not in plugins.get_registry().encoders


def test_register_tasks_hook_adds_a_task_with_alias():
    class TaskPlugin:
        @hookimpl
        def register_tasks(self, register):
            register(ToneTask(corrupt=False), aliases=("tones",))

    plugins.register_plugin(TaskPlugin(), name="task-plugin")
    registry = plugins.get_registry()
    assert registry.task("tones").name == "fake-tones"
    assert registry.plugins["task-plugin"].tasks == ["fake-tones"]
    assert registry.owner[("task", "fake-tones")] == "task-plugin"
