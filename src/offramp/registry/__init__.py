"""Versions of a model: the registry, its record, the regression gate and retraining behind it."""
