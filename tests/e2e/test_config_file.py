"""`garrison up` with a garrison.toml in its working directory: the layers' tables are applied,
an unknown table is a warning in the log, an unknown layer key stops the start naming it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.live import GARRISON, start_server, stop_server

GOOD = """\
log_level = "INFO"

[state]
encrypt = true

[gpus]
starvation_s = 600

[sandboxes]
memory_mib = 1024
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GARRISON_CONFIG", raising=False)  # garrison.toml of the working directory
    monkeypatch.delenv("GARRISON_STATE_ENCRYPT", raising=False)
    return tmp_path


def test_up_applies_the_layer_tables_and_warns_of_an_unknown_table(workdir: Path) -> None:
    (workdir / "garrison.toml").write_text(GOOD)
    assert not (workdir / "data" / "state.key").exists()
    server = start_server(workdir / "data")
    try:
        assert (workdir / "data" / "state.key").exists()  # [state] encrypt = true made the key
        doctor = subprocess.run([GARRISON, "doctor", "--json"], env=server.env, cwd=workdir, capture_output=True,
                                text=True, timeout=60)
        info = json.loads(doctor.stdout)
        assert info["config_file"] == str((workdir / "garrison.toml").resolve())
        assert "[sandboxes] matches no garrison layer" in info["config_check"]
    finally:
        out = stop_server(server)
    assert "garrison.toml: [sandboxes] matches no garrison layer present" in out


def test_up_refuses_an_unknown_key_in_a_layer_table(workdir: Path) -> None:
    (workdir / "garrison.toml").write_text("[gpus]\nstarvation = 600\n")
    with pytest.raises(RuntimeError) as err:
        start_server(workdir / "data")
    assert "garrison.toml [gpus] starvation: not a setting of the gpus layer" in str(err.value)
    assert "Traceback" not in str(err.value)  # one line that says what to fix
