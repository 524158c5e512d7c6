from pathlib import Path

import pytest

from garrison.gpus.inventory import InventoryError, discover_nvml, parse_declared


def test_declared_nodes_with_nvlink_groups_and_health() -> None:
    inv = parse_declared([{"name": "a", "gpus": 4, "memory_mib": 40960, "model": "A100",
                           "nvlink_groups": [[0, 1], [2, 3]], "unhealthy": [3]}])
    assert [g.id for g in inv] == ["a/0", "a/1", "a/2", "a/3"]
    assert inv[0].nvlink_group == inv[1].nvlink_group != inv[2].nvlink_group
    assert [g.healthy for g in inv] == [True, True, True, False]
    assert inv[0].model == "A100" and inv[0].memory_mib == 40960


@pytest.mark.parametrize("nodes, message", [
    ([], "non-empty"),
    ([{"name": "a", "gpus": 0, "memory_mib": 1}], "gpus must be"),
    ([{"name": "a", "gpus": True, "memory_mib": 1}], "gpus must be"),
    ([{"name": "a/b", "gpus": 1, "memory_mib": 1}], "name"),
    ([{"name": "a", "gpus": 1, "memory_mib": "lots"}], "memory_mib"),
    ([{"name": "a", "gpus": 1, "memory_mib": 1}, {"name": "a", "gpus": 1, "memory_mib": 1}], "twice"),
    ([{"name": "a", "gpus": 2, "memory_mib": 1, "nvlink_groups": [[0, 0]]}], "NVLink"),
    (["node"], "object"),
])
def test_bad_declared_inventory_says_what_to_fix(nodes: list, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        parse_declared(nodes)


def test_nvml_discovery_without_a_gpu_degrades_to_a_reason() -> None:
    found = discover_nvml()
    # This test runs on hosts without NVIDIA drivers (CI) and on GPU hosts alike.
    if found.source == "nvml":
        assert found.gpus and all(g.memory_mib > 0 for g in found.gpus)
    else:
        assert found.gpus == [] and found.reason


class FakeNvml:
    """Stands in for the NVIDIA driver's NVML (outside garrison): four GPUs, NVLink pairs 0-1 and 2-3,
    GPU 3 with retired pages pending, GPU 2 in MIG mode."""

    class NVMLError(Exception):
        pass

    NVML_NVLINK_MAX_LINKS = 2

    class _Obj:
        def __init__(self, **kw: object) -> None:
            self.__dict__.update(kw)

    def __init__(self) -> None:
        self.shutdown = False

    def nvmlInit(self) -> None:  # noqa: N802 (NVML's names)
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 4

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetPciInfo(self, h: int) -> object:  # noqa: N802
        return self._Obj(busId=f"0000:0{h}:00.0".encode())

    def nvmlDeviceGetName(self, h: int) -> bytes:  # noqa: N802
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return f"GPU-{h}"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> object:  # noqa: N802
        return self._Obj(total=81559 * 1024 * 1024)

    def nvmlDeviceGetMigMode(self, h: int) -> tuple[int, int]:  # noqa: N802
        return (1 if h == 2 else 0, 0)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: int) -> int:  # noqa: N802
        return 1 if h == 3 else 0

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:  # noqa: N802
        return 1 if link == 0 else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h: int, link: int) -> object:  # noqa: N802
        peer = {0: 1, 1: 0, 2: 3, 3: 2}[h]
        return self._Obj(busId=f"0000:0{peer}:00.0")


def test_nvml_discovery_maps_model_memory_mig_nvlink_and_health(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    found = discover_nvml(node="gpu-host")
    assert found.source == "nvml" and fake.shutdown
    assert [g.id for g in found.gpus] == ["gpu-host/0", "gpu-host/1", "gpu-host/2", "gpu-host/3"]
    assert {g.memory_mib for g in found.gpus} == {81559} and found.gpus[0].model == "NVIDIA H100 80GB HBM3"
    groups = [g.nvlink_group for g in found.gpus]
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert [g.mig for g in found.gpus] == [False, False, True, False]
    assert [g.healthy for g in found.gpus] == [True, True, True, False]
    assert found.gpus[1].uuid == "GPU-1"


def test_layer_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from garrison.gpus.settings import GpuSettings

    monkeypatch.setenv("GARRISON_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("GARRISON_GPUS_STARVATION_S", "600")
    assert GpuSettings().starvation_s == 600
    monkeypatch.setenv("GARRISON_GPUS_STARVATION_S", "soon")
    with pytest.raises(ValueError, match="GARRISON_GPUS_STARVATION_S: must be a number from 1 to 604800, not 'soon'"):
        GpuSettings()
    monkeypatch.setenv("GARRISON_GPUS_STARVATION_S", "")
    assert GpuSettings().starvation_s == 1800
    monkeypatch.delenv("GARRISON_GPUS_STARVATION_S")
    assert GpuSettings().starvation_s == 1800
    monkeypatch.setenv("GARRISON_GPUS_LAUNCHER", "maybe")  # as before: only 1, true or yes turn it on
    assert GpuSettings().launcher is False
