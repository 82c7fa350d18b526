"""offramp in front of an app's own LLM: its task's requests answered locally, in the shape the app expects; the rest forwarded."""
