"""Dependencies from a wheelhouse: what a bundle declares, an offline install, its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.core.errors import BadRequest
from garrison.runtime import deps
from runtime.test_sessions import build_wheelhouse


def test_requirements_from_requirements_txt_and_pyproject(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# agent deps\nbedrock-agentcore>=0.1\n\nopenai[realtime] >=1.0, <9 "
                                               "# the SDK\nsix; python_version >= '3'\n")
    assert deps.requirements(tmp_path) == ["bedrock-agentcore>=0.1", "openai[realtime] >=1.0, <9",
                                           "six; python_version >= '3'"]
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "a"\ndependencies = ["six>=1", "openai"]\n')
    assert deps.requirements(tmp_path) == ["six>=1", "openai"]
    (tmp_path / "pyproject.toml").unlink()
    assert deps.requirements(tmp_path) == []
    for bad in ("-e .", "--extra-index-url https://x", "git+https://example.com/x.git", "./local.whl"):
        (tmp_path / "requirements.txt").write_text(bad + "\n")
        with pytest.raises(BadRequest, match="line 1"):
            deps.requirements(tmp_path)


def test_offline_install_is_cached_and_names_what_is_missing(tmp_path: Path) -> None:
    wheelhouse = build_wheelhouse()
    first = deps.install(["six"], wheelhouse, tmp_path / "cache", 300)
    assert (first / "six.py").is_file()
    assert deps.install(["six"], wheelhouse, tmp_path / "cache", 300) == first  # cached: no second install
    with pytest.raises(BadRequest, match="no-such-dist-garrison") as err:
        deps.install(["six", "no-such-dist-garrison"], wheelhouse, tmp_path / "cache", 300)
    assert err.value.slug == "missing-dependency"
    with pytest.raises(BadRequest, match="does not exist"):
        deps.install(["six"], tmp_path / "nowhere", tmp_path / "cache2", 300)
    templates = tmp_path / "templates"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "main.py").write_text("print('hi')\n")
    deps.build_template(templates, "agent-abc", first, bundle, ["six"])
    site = templates / "agent-abc" / "site-packages"
    assert (site / "six.py").is_file() and (site / deps.AGENT_DIR / "main.py").read_text() == "print('hi')\n"
    assert (site / "six.py").stat().st_mode & 0o004  # world-readable: the sandbox user is unprivileged
