"""The core install stays light: nothing it requires, directly or through others, pulls in torch."""

import re
from importlib import metadata


def _requirements(dist: str) -> list[str]:
    names = []
    for req in metadata.requires(dist) or []:
        if "extra ==" in req:
            continue  # optional extras are not part of the core install
        names.append(re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0].lower())
    return names


def test_core_dependency_tree_has_no_torch():
    seen, todo = set(), ["offramp"]
    while todo:
        d = todo.pop()
        if d in seen:
            continue
        seen.add(d)
        try:
            todo += _requirements(d)
        except metadata.PackageNotFoundError:
            pass
    assert "scikit-learn" in seen and "numpy" in seen
    assert not {"torch", "tensorflow", "jax"} & seen, seen


def test_cli_imports_no_heavy_modules():
    import subprocess
    import sys

    code = "import sys, offramp.cli.main; print(sorted(m for m in ('torch', 'sklearn', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torch" not in out
