"""The examples in the public API's docstrings run, and give what they show."""

import doctest
import importlib

import pytest

MODULES = [
    "offramp.training.train",
    "offramp.evaluation.evaluate",
    "offramp.runtime.cascade",
    "offramp.estimators.tfidf",
    "offramp.estimators.features",
    "offramp.data.io",
    "offramp.training.noise",
    "offramp.training.auto",
    "offramp.runtime.routing",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
