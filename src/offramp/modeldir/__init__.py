"""Model directories on disk: JSON + arrays, hash-checked, never pickle; the model card."""
