"""Talking to LLMs: one client for any OpenAI-compatible chat-completions endpoint."""
