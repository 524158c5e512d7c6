"""Settings: defaults that work on one machine, environment variables, garrison.toml."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from garrison.config import ConfigError, Settings


def test_defaults_work_on_one_machine(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for k in ("GARRISON_DATA_DIR", "GARRISON_PORT", "GARRISON_DATABASE_URL", "GARRISON_REDIS_URL"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert s.host == "127.0.0.1" and s.port == 8400
    assert s.data_dir == Path(".garrison")
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///") and "garrison.db" in s.resolved_database_url
    assert s.redis_url is None and s.temporal_address is None


def test_environment_overrides(monkeypatch):
    monkeypatch.setenv("GARRISON_PORT", "9001")
    monkeypatch.setenv("GARRISON_DATABASE_URL", "postgresql://u@db:5432/g")
    s = Settings()
    assert s.port == 9001
    assert s.resolved_database_url == "postgresql+psycopg://u@db:5432/g"
    assert "***" not in s.describe()["database"]  # no password, nothing to mask


def test_password_is_masked_in_describe(monkeypatch):
    monkeypatch.setenv("GARRISON_DATABASE_URL", "postgresql+psycopg://u:secret@db/g")
    assert "secret" not in str(Settings().describe())


def test_toml_file_is_read_and_env_wins(monkeypatch, tmp_path):
    toml = tmp_path / "garrison.toml"
    toml.write_text('port = 8500\nhost = "0.0.0.0"\npolicy_mode = "log_only"\n')
    monkeypatch.setenv("GARRISON_CONFIG", str(toml))
    monkeypatch.delenv("GARRISON_PORT", raising=False)
    s = Settings()
    assert s.port == 8500 and s.policy_mode == "log_only" and s.base_url == "http://127.0.0.1:8500"
    monkeypatch.setenv("GARRISON_PORT", "8600")
    assert Settings().port == 8600


@pytest.mark.parametrize("env,value", [("GARRISON_PORT", "0"), ("GARRISON_PORT", "http"),
                                        ("GARRISON_DATABASE_URL", "mysql://x"),
                                        ("GARRISON_POLICY_MODE", "maybe")])
def test_bad_settings_are_refused_with_the_variable_named(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        Settings()
    assert str(err.value).startswith(f"{env}: ")


def test_bad_values_passed_by_code_stay_validation_errors():
    with pytest.raises(ValidationError, match="port"):
        Settings(port=0)
