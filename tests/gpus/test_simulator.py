import json

import pytest

from garrison.gpus.simulator import simulate
from garrison.gpus.trace import TraceError, generate, load, parse


def test_generated_trace_round_trips_through_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trace = generate(3, gpus=8, hours=0.5)
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace.to_json()))
    again = load(path)
    assert len(again.jobs) == len(trace.jobs) and len(again.gpus) == 8
    assert [q.name for q in again.queues] == [q.name for q in trace.queues]


def test_simulation_reports_both_runs_and_never_places_a_partial_gang() -> None:
    report = simulate(generate(5, gpus=8, hours=1.5, load=1.4))
    g, f = report["garrison"], report["fifo"]
    assert g["partial_gangs"] == 0 and f["partial_gangs"] == 0
    assert g["never_started"] == [] and g["refused"] == []
    assert set(g["waits"]) == {"interactive", "batch", "training"}
    # Packing fractions beats giving each a whole GPU on a fraction-heavy trace.
    assert g["utilisation"] > f["utilisation"]
    assert f["held_utilisation"] >= f["utilisation"]
    assert g["waits"]["interactive"]["p95_s"] <= g["waits"]["training"]["p95_s"]
    assert set(g["queues"]) == {"acme-research", "acme-product", "globex-ml"}


def test_simulation_is_deterministic_for_a_seed() -> None:
    a = simulate(generate(9, gpus=4, hours=0.5))
    b = simulate(generate(9, gpus=4, hours=0.5))
    for run in ("garrison", "fifo"):
        for key in ("utilisation", "waits", "makespan_s"):
            assert a[run][key] == b[run][key]


@pytest.mark.parametrize("raw, message", [
    ([], "JSON object"),
    ({"queues": []}, "no queues"),
    ({"queues": [{"name": "q", "bogus": 1}], "jobs": []}, "unknown or missing field"),
    ({"queues": [{"name": "q"}], "jobs": [{"id": "j", "arrival_s": 0, "queue": "q", "duration_s": -1}]},
     "duration_s"),
    ({"queues": [{"name": "q"}], "jobs": [{"id": "j", "arrival_s": 0, "queue": "q", "duration_s": 1,
                                            "priority_class": "vip"}]}, "priority_class"),
])
def test_bad_traces_are_refused(raw: object, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse(raw, gpus=2)


def test_impossible_jobs_in_a_trace_are_reported_as_refused() -> None:
    raw = {"queues": [{"name": "q", "quota": 2}],
           "jobs": [{"id": "ok", "arrival_s": 0, "queue": "q", "duration_s": 10, "gpus": 1},
                    {"id": "huge", "arrival_s": 1, "queue": "q", "duration_s": 10, "gpus": 64}]}
    report = simulate(parse(raw, gpus=2))
    assert [r.split(":")[0] for r in report["garrison"]["refused"]] == ["huge"]
