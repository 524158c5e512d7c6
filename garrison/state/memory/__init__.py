"""Long-term memory: a LangGraph BaseStore with semantic search, and its embedders."""
