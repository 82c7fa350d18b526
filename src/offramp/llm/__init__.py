"""The LLM side: one client for any OpenAI-compatible server, the local server, labelling, logs, prompts."""
