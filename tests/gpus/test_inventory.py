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
