"""The estimators, their selection and training, and the model directory.

Importing this package registers the built-in model families with the store.
"""

from offramp.models import centroid, mpnet, multilabel, stacked, tfidf  # noqa: F401  (registration)
