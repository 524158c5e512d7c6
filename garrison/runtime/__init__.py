"""Agent runtime: deployed agents, LangGraph Platform API, durable runs on Temporal."""
