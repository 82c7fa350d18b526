"""The capture pool: answers the LLM gave and corrections people made, masked, kept for retraining."""
