"""A real client: a PydanticAI agent with Temporal durability (pydantic-ai's TemporalAgent), its worker
on the embedded Temporal that garrison starts, its model behind garrison's LLM gateway (fake upstream)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.durable_exec.temporal import AgentPlugin, PydanticAIPlugin, TemporalAgent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from garrison.llm.fake_upstream import FakeConfig, FakeUpstream

pytestmark = pytest.mark.slow  # starts garrison's own embedded Temporal dev server

_agents: dict[str, TemporalAgent] = {}  # the workflow finds its agent by name (set up by the test)


@pytest.fixture
def temporal_address():  # type: ignore[no-untyped-def]
    """No cluster address: garrison starts its embedded Temporal, which this test's worker joins."""
    return None


@pytest.fixture
def db_url(tmp_path):  # type: ignore[no-untyped-def]
    return f"sqlite+aiosqlite:///{tmp_path / 'garrison.db'}"


@workflow.defn(name="PydanticAIQuestion")
class QuestionWorkflow:
    @workflow.run
    async def run(self, prompt: str) -> str:
        result = await _agents["researcher"].run(prompt)
        return str(result.output)


async def test_pydantic_ai_temporal_agent_runs_on_garrisons_temporal(client, platform, live_url, make_key):
    runtime = platform.services["runtime"]
    async with FakeUpstream(FakeConfig(completion_tokens=6)) as upstream:
        r = await client.post("/api/llm/models", json={"model": "fake-model", "base_url": upstream.base_url})
        assert r.status_code == 201, r.text
        key = await make_key(["llm:invoke"], principal="pydantic-worker")
        model = OpenAIChatModel("fake-model", provider=OpenAIProvider(openai_client=AsyncOpenAI(
            base_url=live_url + "/v1", api_key=key, default_headers={"x-garrison-agent": "researcher"})))
        _agents["researcher"] = TemporalAgent(Agent(model, name="researcher", instructions="Answer briefly."))

        await runtime.engine.client()  # garrison brings its embedded Temporal up (lazily, as for a run)
        status = (await client.get("/api/runtime/status")).json()["temporal"]
        assert status["mode"] == "embedded" and status["started"]
        temporal = await Client.connect(status["address"], namespace=status["namespace"], plugins=[PydanticAIPlugin()])
        queue = f"pydantic-ai-{uuid.uuid4().hex[:8]}"
        async with Worker(temporal, task_queue=queue, workflows=[QuestionWorkflow],
                          plugins=[AgentPlugin(_agents["researcher"])], workflow_runner=UnsandboxedWorkflowRunner()):
            handle = await temporal.start_workflow(QuestionWorkflow.run, "What is garrison?", id=str(uuid.uuid4()),
                                                   task_queue=queue, execution_timeout=timedelta(seconds=60))
            answer = await handle.result()
        assert answer  # the fake upstream's words, through the gateway
        assert upstream.stats.completed == 1
        assert upstream.stats.last_body["messages"][-1]["content"] == "What is garrison?"
        # Durable: the model request ran as a Temporal activity, recorded in the workflow's history.
        kinds = [e.event_type async for e in handle.fetch_history_events()]
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED in kinds
        # And it is metered like any model call through garrison.
        for _ in range(100):
            rows = (await client.get("/api/usage", params={"by": "agent"})).json()["rows"]
            mine = [row for row in rows if row.get("agent") == "researcher"]
            if mine:
                break
            await asyncio.sleep(0.05)
        assert mine and mine[0]["requests"] == 1 and mine[0]["output_tokens"] == 6
