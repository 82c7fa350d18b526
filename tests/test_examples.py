"""The examples in the public API's docstrings run, and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "offramp.models.training",
    "offramp.evaluation.evaluate",
    "offramp.pipeline.cascade",
    "offramp.models.tfidf",
    "offramp.models.features",
    "offramp.data.io",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
