"""Attribute spellings of the GenAI conventions in use, mapped to one canonical form.

Each tuple lists the spellings of one field, newest first: OpenTelemetry gen_ai
semantic conventions 1.36 to 1.42 (and the older names instrumentations still emit),
OpenInference (``llm.*``, ``openinference.span.kind``), OpenLLMetry (``traceloop.*``,
``llm.usage.*``) and Langfuse (``langfuse.*``).
"""

from __future__ import annotations

KINDS = ("agent", "workflow", "model", "tool", "retrieval", "guardrail", "sandbox", "other")

OPERATION_KIND = {
    "chat": "model", "text_completion": "model", "completion": "model", "generate_content": "model",
    "embeddings": "model", "embedding": "model", "responses": "model",
    "execute_tool": "tool",
    "invoke_agent": "agent", "create_agent": "agent",
    "invoke_workflow": "workflow",
    "retrieval": "retrieval", "retrieve": "retrieval",
    "apply_guardrail": "guardrail",
}
OPENINFERENCE_KIND = {
    "LLM": "model", "EMBEDDING": "model", "TOOL": "tool", "AGENT": "agent", "CHAIN": "workflow",
    "RETRIEVER": "retrieval", "RERANKER": "retrieval", "GUARDRAIL": "guardrail", "EVALUATOR": "other",
}
TRACELOOP_KIND = {"workflow": "workflow", "task": "workflow", "agent": "agent", "tool": "tool"}
LANGFUSE_KIND = {
    "generation": "model", "embedding": "model", "agent": "agent", "tool": "tool", "chain": "workflow",
    "retriever": "retrieval", "guardrail": "guardrail", "evaluator": "other", "span": "other",
    "event": "other",
}

OPERATION = ("gen_ai.operation.name",)
MODEL = (
    "gen_ai.response.model", "gen_ai.request.model", "llm.model_name", "langfuse.observation.model.name",
    "llm.request.model", "llm.response.model",
)
PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "langfuse.observation.model.provider")
INPUT_TOKENS = (
    "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt",
    "llm.usage.prompt_tokens",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.token_count.completion",
    "llm.usage.completion_tokens",
)
CACHED_TOKENS = (
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
    "llm.token_count.prompt_details.cache_read", "gen_ai.usage.cached_tokens",
)
REASONING_TOKENS = (
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
    "llm.token_count.completion_details.reasoning",
)
TOOL_NAME = ("gen_ai.tool.name", "tool.name", "langfuse.observation.tool.name")
TOOL_CALL_ID = ("gen_ai.tool.call.id", "tool_call.id")
SESSION = (
    "gen_ai.conversation.id", "session.id", "langfuse.session.id",
    "traceloop.association.properties.session_id", "garrison.session_id",
)
USER = (
    "user.id", "enduser.id", "langfuse.user.id", "traceloop.association.properties.user_id",
    "garrison.user",
)
AGENT = ("gen_ai.agent.name", "agent.name", "langfuse.observation.agent.name", "garrison.agent")
FINISH_REASONS = ("gen_ai.response.finish_reasons", "llm.response.finish_reason")
ERROR_TYPE = ("error.type", "exception.type")

# Message content: stripped from stored attributes, kept apart only when capture is on.
INPUT_CONTENT_PREFIXES = (
    "gen_ai.prompt", "gen_ai.input.messages", "gen_ai.system_instructions", "gen_ai.tool.call.arguments",
    "gen_ai.tool.definitions", "llm.input_messages", "llm.prompts", "input.value", "input.mime_type",
    "langfuse.observation.input", "traceloop.entity.input", "tool.parameters", "gen_ai.retrieval.query",
)
OUTPUT_CONTENT_PREFIXES = (
    "gen_ai.completion", "gen_ai.output.messages", "gen_ai.tool.call.result", "llm.output_messages",
    "output.value", "output.mime_type", "langfuse.observation.output", "traceloop.entity.output",
    "gen_ai.retrieval.documents", "retrieval.documents",
)
# GenAI log events (/v1/logs and span events) that carry content.
CONTENT_EVENTS = (
    "gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message", "gen_ai.tool.message",
    "gen_ai.choice", "gen_ai.client.inference.operation.details", "gen_ai.content.prompt",
    "gen_ai.content.completion",
)
