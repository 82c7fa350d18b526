"""What happens to a message: guard, small model, routing to the LLM, fallback, actions; the pipeline file."""
