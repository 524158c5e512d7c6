"""What one trace per invocation costs the runtime in CPU, per run and per session invocation.

Per run, garrison now opens an ``invoke_agent`` span when the run is created, chooses the run's
trace ids (``run_trace``) and records the ``runtime.run`` span when it ends (``end_run_span``);
before, it only wrote the caller's traceparent into the run (``propagate.inject``). Per AgentCore
session invocation, it sets the invocation's attributes on the route's existing span and formats
the traceparent it hands the agent (no new span). Measured as process CPU time over ``--n``
iterations with garrison's tracer provider installed and a sink that counts the spans (storing
them in the trace store is the telemetry layer's cost, not counted here). The machine is shared:
the load average is printed with the figures.

Usage: python benchmarks/runtime_tracing.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource

from opentelemetry import propagate, trace

from garrison.runtime.attribution import end_run_span, run_trace, traceparent_of
from garrison.telemetry import provider


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main(n: int) -> None:
    stored = [0]
    provider.install(lambda raws: stored.__setitem__(0, stored[0] + len(raws)))
    tracer = trace.get_tracer("garrison.runtime")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tracer.start_as_current_span("POST /threads/{thread_id}/runs"):
        start = _cpu()
        for _ in range(n):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)  # what a run's creation did before
        before = _cpu() - start
        start = _cpu()
        for i in range(n):
            with tracer.start_as_current_span("invoke_agent", attributes={
                    "gen_ai.operation.name": "invoke_agent", "garrison.tenant_id": "t", "user.id": "u",
                    "garrison.endpoint": "default"}) as span:
                span.update_name("invoke_agent agent")
                span.set_attributes({"gen_ai.agent.name": "agent", "gen_ai.agent.id": "a", "garrison.agent_version": "1",
                                     "garrison.graph_id": "g"})
                spec = {"agent_id": "a", "version": 1, **run_trace()}
                span.set_attributes({"garrison.run_id": str(i), "gen_ai.conversation.id": "thread"})
            end_run_span({"spec": spec, "thread_id": "thread", "owner": "u", "tenant_id": "t", "run_id": str(i)},
                         "success", None, "agent")
            if i % 1000 == 0:
                await asyncio.sleep(0)  # let the sink run
        after = _cpu() - start
        span = trace.get_current_span()
        start = _cpu()
        for _ in range(n):
            traceparent_of(span)
            span.set_attributes({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "agent",
                                 "gen_ai.agent.id": "a", "garrison.agent_version": "1",
                                 "gen_ai.conversation.id": "s" * 40, "user.id": "u", "garrison.tenant_id": "t",
                                 "sandbox.id": "sbx"})
        session = _cpu() - start
    provider.flush()
    await asyncio.sleep(0.3)
    print(f"per run: {after / n * 1e6:.1f} us CPU (was {before / n * 1e6:.1f} us); spans recorded: {stored[0]}")
    print(f"per session invocation: {session / n * 1e6:.1f} us CPU")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().n))
