"""offramp: move a narrow text task off a paid LLM onto a small local model, and prove the move."""

__version__ = "0.1.0"

from offramp.errors import DataError, ModelDirError, OfframpError, UsageError  # noqa: E402
from offramp.models.store import load_model, save_model  # noqa: E402

__all__ = ["OfframpError", "DataError", "ModelDirError", "UsageError", "load_model", "save_model", "__version__"]
