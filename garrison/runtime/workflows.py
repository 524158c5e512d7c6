"""The durable run: one Temporal workflow per run, one activity per graph superstep.

The workflow carries ids only; inputs, outputs and checkpoints live in garrison's store
(claim-check), and the workflow continues-as-new every few dozen steps, so neither the
payload cap nor the history cap is ever reached. Completed supersteps are checkpointed
by the state layer before the activity returns: a step retried after a crash resumes
from the last checkpoint, so no completed step runs twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

WORKFLOW_NAME = "garrison.AgentRun"
STEP_ACTIVITY = "garrison.run_step"
FINISH_ACTIVITY = "garrison.finish_run"


@dataclass
class RunParams:
    run_id: str
    step: int = 0
    steps_per_history: int = 100
    step_timeout_s: float = 600.0
    heartbeat_timeout_s: float = 5.0
    max_attempts: int = 5
    max_steps: int = 1000
    hold_for_input_s: float = 0.0
    resume_input_id: str | None = None
    local_steps: bool = False


@dataclass
class StepParams:
    run_id: str
    step: int
    resume_input_id: str | None = None


@dataclass
class StepOutcome:
    # "continue": more supersteps; "wait": an earlier run of the thread still runs (enqueue);
    # "interrupted": the graph asks for human input; "success" / "error": the run is over;
    # "cancelled": already recorded as interrupted (cancelled through garrison, or stopped at a breakpoint
    # compiled into the graph): the run ends, holding for no input.
    status: str
    # Set when a repeated step found the run already further on: the step to run next.
    next_step: int | None = None


@dataclass
class FinishParams:
    run_id: str
    status: str
    error: str | None = None


@workflow.defn(name=WORKFLOW_NAME)
class AgentRunWorkflow:
    def __init__(self) -> None:
        self._input_id: str | None = None
        self._cancelled = False

    @workflow.signal(name="cancel")
    def cancel(self) -> None:
        # Temporal's own cancel reaches only what the workflow awaits at that moment; a step that
        # finishes anyway must not let the run go on, so the request is also remembered here.
        self._cancelled = True

    @workflow.signal(name="human_input")
    def human_input(self, input_id: str) -> None:
        self._input_id = input_id

    @workflow.run
    async def run(self, params: RunParams) -> str:
        step, resume = params.step, params.resume_input_id
        timeouts = {"start_to_close_timeout": timedelta(seconds=params.step_timeout_s),
                    "heartbeat_timeout": timedelta(seconds=params.heartbeat_timeout_s)}
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=5), maximum_attempts=params.max_attempts)
        started = step
        try:
            while True:
                if step >= params.max_steps:
                    return await self._finish(params.run_id, "error", f"run exceeded {params.max_steps} steps")
                step_params = StepParams(params.run_id, step, resume)
                if params.local_steps:
                    outcome: StepOutcome = await workflow.execute_local_activity(
                        STEP_ACTIVITY, step_params, result_type=StepOutcome,
                        start_to_close_timeout=timeouts["start_to_close_timeout"], retry_policy=retry)
                else:
                    outcome = await workflow.execute_activity(
                        STEP_ACTIVITY, step_params, result_type=StepOutcome,
                        start_to_close_timeout=timeouts["start_to_close_timeout"],
                        heartbeat_timeout=timeouts["heartbeat_timeout"], retry_policy=retry,
                        cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)
                resume = None
                if outcome.status == "cancelled":
                    return "interrupted"
                if self._cancelled:
                    return await self._finish(params.run_id, "interrupted", "cancelled")
                if outcome.status == "wait":
                    await workflow.sleep(timedelta(milliseconds=250))
                    continue
                step = outcome.next_step if outcome.next_step is not None else step + 1
                if outcome.status == "interrupted" and params.hold_for_input_s > 0:
                    self._input_id = None
                    try:
                        await workflow.wait_condition(lambda: self._input_id is not None,
                                                      timeout=timedelta(seconds=params.hold_for_input_s))
                    except TimeoutError:
                        return await self._finish(params.run_id, "interrupted", None)
                    resume = self._input_id
                    outcome.status = "continue"
                if outcome.status != "continue":
                    return outcome.status
                if step - started >= params.steps_per_history or workflow.info().is_continue_as_new_suggested():
                    workflow.continue_as_new(RunParams(**{**params.__dict__, "step": step, "resume_input_id": resume}),
                                             task_timeout=workflow.info().task_timeout)
        except (asyncio.CancelledError, CancelledError):
            await self._finish(params.run_id, "interrupted", "cancelled")
            raise
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, CancelledError) or self._cancelled:
                return await self._finish(params.run_id, "interrupted", "cancelled")
            return await self._finish(params.run_id, "error", str(cause) if cause else str(exc))

    async def _finish(self, run_id: str, status: str, error: str | None) -> str:
        await workflow.execute_activity(FINISH_ACTIVITY, FinishParams(run_id, status, error),
                                        start_to_close_timeout=timedelta(seconds=30),
                                        retry_policy=RetryPolicy(maximum_attempts=10))
        return status
