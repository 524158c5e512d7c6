"""OpenAI-compatible LLM gateway: upstream pools, admission, fair queuing, routing."""
