"""The layers' settings from garrison.toml: a table per layer, the environment still wins, and a
bad key or value stops the start naming the file, table and key."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from garrison.config import LAYER_SETTINGS_MODULES, ConfigError, LayerSettings, Settings, check_config_file
from garrison.gpus.settings import GpuSettings
from garrison.platform import Platform
from garrison.runtime.deps import DepsSettings
from garrison.runtime.sandboxed_steps import GraphIsolationSettings
from garrison.runtime.sessions import SessionSettings
from garrison.runtime.settings import RuntimeSettings
from garrison.sandbox.config import SandboxSettings
from garrison.state.settings import StateSettings

GOOD = """\
port = 8500

[sandbox]
default_packages = ["numpy"]
memory_mib = 1024
self_test = false

[runtime]
graph_isolation = "process"
session_idle_timeout_s = 60
step_mode = "activity"
pip_timeout_s = 30

[state]
encrypt = true
synchronous = "full"
retention_interval_s = 0

[gpus]
starvation_s = 600
launcher = true
node = "gpu-host"
"""


@pytest.fixture
def toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "garrison.toml"
    path.parent.mkdir()
    monkeypatch.setenv("GARRISON_CONFIG", str(path))
    for name in ("GARRISON_PORT", "GARRISON_SANDBOX_MEMORY_MIB", "GARRISON_RUNTIME_GRAPH_ISOLATION",
                 "GARRISON_STATE_SYNCHRONOUS", "GARRISON_STATE_ENCRYPT", "GARRISON_GPUS_STARVATION_S",
                 "GARRISON_GPUS_LAUNCHER", "GARRISON_SANDBOX_SELF_TEST", "GARRISON_STATE_RETENTION_INTERVAL_S"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_every_layer_table_is_read_by_the_layer_settings(toml: Path) -> None:
    toml.write_text(GOOD)
    sandbox = SandboxSettings()
    assert sandbox.default_packages == ["numpy"] and sandbox.memory_mib == 1024 and sandbox.self_test is False
    assert sandbox.cpus == 1.0  # what the file does not say keeps its default
    assert GraphIsolationSettings().isolation == "process"
    assert SessionSettings().idle_timeout_s == 60  # [runtime] session_*: the GARRISON_RUNTIME_SESSION_ settings
    assert RuntimeSettings().step_mode == "activity" and DepsSettings().pip_timeout_s == 30
    state = StateSettings()
    assert state.encrypt is True and state.synchronous == "FULL" and state.retention_interval_s == 0
    gpus = GpuSettings()
    assert gpus.starvation_s == 600 and gpus.launcher is True and gpus.node == "gpu-host" and gpus.cycle_s == 1.0
    assert Settings().port == 8500  # the core settings are still the top-level keys
    assert check_config_file() == []


def test_the_environment_wins_over_the_file(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text(GOOD)
    monkeypatch.setenv("GARRISON_SANDBOX_MEMORY_MIB", "2048")
    monkeypatch.setenv("GARRISON_RUNTIME_GRAPH_ISOLATION", "sandbox")
    monkeypatch.setenv("GARRISON_STATE_SYNCHRONOUS", "normal")
    monkeypatch.setenv("GARRISON_STATE_ENCRYPT", "no")
    monkeypatch.setenv("GARRISON_GPUS_STARVATION_S", "700")
    assert SandboxSettings().memory_mib == 2048 and SandboxSettings().default_packages == ["numpy"]
    assert GraphIsolationSettings().isolation == "sandbox"
    assert StateSettings().synchronous == "NORMAL" and StateSettings().encrypt is False
    assert GpuSettings().starvation_s == 700 and GpuSettings().launcher is True


@pytest.mark.parametrize("table,line,key,says", [
    ("sandbox", 'memory_mib = "lots"', "memory_mib", "valid integer"),
    ("sandbox", 'default_packages = "numpy"', "default_packages", "valid list"),
    ("runtime", "session_idle_timeout_s = -1", "session_idle_timeout_s", "greater than 0"),
    ("runtime", 'graph_isolation = "vm"', "graph_isolation", "'process' or 'sandbox'"),
    ("state", 'synchronous = "sometimes"', "synchronous", "must be one of ('NORMAL', 'FULL'), not 'SOMETIMES'"),
    ("gpus", "starvation_s = 0", "starvation_s", "must be a number from 1 to 604800, not 0"),
])
def test_a_bad_value_names_the_file_table_and_key(toml: Path, table: str, line: str, key: str, says: str) -> None:
    toml.write_text(f"[{table}]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        check_config_file()
    assert f"{toml} [{table}] {key}: " in str(err.value) and says in str(err.value)


def test_a_bad_core_value_in_the_file_names_the_file_and_key(toml: Path) -> None:
    toml.write_text('port = "http"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{toml} port: Input should be a valid integer")):
        Settings()


def test_a_bad_environment_value_names_the_variable(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml.write_text(GOOD)
    monkeypatch.setenv("GARRISON_RUNTIME_SESSION_IDLE_TIMEOUT_S", "soon")
    with pytest.raises(ConfigError, match="GARRISON_RUNTIME_SESSION_IDLE_TIMEOUT_S: Input should be a valid number"):
        SessionSettings()


def test_an_unknown_key_in_a_layer_table_stops_the_start(toml: Path) -> None:
    toml.write_text('[runtime]\ngraph_isolaton = "process"\nstep_mode = "local"\n')
    with pytest.raises(ConfigError) as err:
        check_config_file()
    message = str(err.value)
    assert message.startswith(f"{toml} [runtime] graph_isolaton: not a setting of the runtime layer")
    assert "graph_isolation" in message and "session_idle_timeout_s" in message  # what it could have been
    assert RuntimeSettings().step_mode == "local"  # a class alone ignores keys of its table it does not own


def test_an_unknown_table_or_top_level_key_is_a_warning(toml: Path, caplog: pytest.LogCaptureFixture) -> None:
    toml.write_text('sandbox_memory_mib = 1024\n[sandboxes]\nmemory_mib = 1024\n[gpus]\ncycle_s = 2\n')
    with caplog.at_level(logging.WARNING, logger="garrison.config"):
        warnings = check_config_file()
    assert len(warnings) == 2
    assert "sandbox_memory_mib is not a garrison setting" in warnings[0]
    assert f"{toml}: [sandboxes] matches no garrison layer" in warnings[1] and "sandbox" in warnings[1]
    assert [r.getMessage() for r in caplog.records] == warnings
    assert SandboxSettings().memory_mib == 512 and GpuSettings().cycle_s == 2


def test_invalid_toml_names_the_file(toml: Path) -> None:
    toml.write_text("[sandbox\nmemory_mib = 1\n")
    for read in (Settings, SandboxSettings, check_config_file):
        with pytest.raises(ConfigError, match=re.escape(f"{toml}: not valid TOML: ")):
            read()


def test_every_layer_settings_class_is_listed_for_its_table() -> None:
    """A LayerSettings subclass whose module LAYER_SETTINGS_MODULES leaves out would make its keys unknown."""
    root = Path(__file__).resolve().parents[2]
    found = {}
    for path in (root / "garrison").rglob("*.py"):
        for name in re.findall(r"^class (\w+)\(LayerSettings\)", path.read_text(), re.M):
            found[name] = ".".join(path.relative_to(root).with_suffix("").parts)
    assert len(found) >= 11
    for name, module in found.items():
        cls = next(c for cs in LayerSettings.tables.values() for c in cs if c.__name__ == name)
        assert module in LAYER_SETTINGS_MODULES[cls.toml_table()[0]], (name, module)


@pytest.fixture
def written(toml: Path, request: pytest.FixtureRequest) -> Path:
    toml.write_text(request.param)
    return toml


@pytest.mark.parametrize("written", [GOOD.replace("launcher = true\n", "")], indirect=True)
async def test_a_platform_starts_with_the_layer_tables(written: Path, settings: Settings) -> None:
    platform = Platform(settings)
    await platform.start()
    try:
        assert platform.services["gpus"].config.starvation_s == 600
        assert platform.services["state"].encryption_key is not None  # [state] encrypt = true
        assert platform.services["state"]._task is None  # retention_interval_s = 0: no retention loop
        assert platform.services["sandbox"].settings.default_packages == ["numpy"]
    finally:
        await platform.stop()


@pytest.mark.parametrize("written", ["[gpus]\nstarvation = 600\n"], indirect=True)
async def test_a_platform_does_not_start_with_an_unknown_layer_key(written: Path, settings: Settings) -> None:
    platform = Platform(settings)
    try:
        with pytest.raises(ConfigError, match=re.escape(f"{written} [gpus] starvation: not a setting of the gpus")):
            await platform.start()
        assert not platform.services
    finally:
        await platform.stop()
