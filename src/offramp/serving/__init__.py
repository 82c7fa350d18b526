"""The HTTP service: FastAPI routes over the cascade, metrics, API keys and rate limits."""
