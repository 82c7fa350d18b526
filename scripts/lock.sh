#!/usr/bin/env bash
# Write the lock files that scripts/setup.sh installs from, with uv (pinned in the dev extra).
#
#   bash scripts/lock.sh            resolve pyproject.toml again: a pin already in a lock is kept
#                                   unless pyproject.toml no longer allows it
#   bash scripts/lock.sh --upgrade  move every pin to the newest release pyproject.toml allows
#   bash scripts/lock.sh --check    exit 1 if a lock no longer matches pyproject.toml (CI runs this)
#
# requirements/runtime.lock  what `setup.sh` installs: the core, [embeddings] and [privacy]
# requirements/dev.lock      what `setup.sh --dev` installs: every extra and the test tools
# Both are resolved for CPython 3.11 on x86_64 Linux (the machines CI runs on), with the SHA-256 of
# every file pip may choose, so `pip install --require-hashes` refuses anything else.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
case "$mode" in
  ""|--upgrade|--check) ;;
  *) echo "lock.sh: unknown option $mode (use --upgrade or --check)" >&2; exit 2 ;;
esac
command -v uv >/dev/null || { echo "lock.sh: uv is not installed (it is in the dev extra: bash scripts/setup.sh --dev)" >&2; exit 2; }

compile() {  # compile OUT EXTRA...
  local out=$1; shift
  local args=(pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28
              --generate-hashes --no-header --quiet --output-file "$out")
  for extra in "$@"; do args+=(--extra "$extra"); done
  [ "$mode" = --upgrade ] && args+=(--upgrade)
  uv pip compile "${args[@]}"
}

status=0
for spec in "runtime.lock embeddings privacy" "dev.lock dev embeddings privacy ray llm export"; do
  set -- $spec
  name=$1; shift
  if [ "$mode" = --check ]; then
    tmp="$(mktemp -d)"
    cp "requirements/$name" "$tmp/$name"
    compile "$tmp/$name" "$@"
    if ! diff -q "requirements/$name" "$tmp/$name" >/dev/null; then
      echo "lock.sh: requirements/$name does not match pyproject.toml; run: bash scripts/lock.sh" >&2
      diff "requirements/$name" "$tmp/$name" | grep '^[<>] [a-z]' | head -20 >&2 || true
      status=1
    fi
    rm -rf "$tmp"
  else
    compile "requirements/$name" "$@"
    echo "wrote requirements/$name ($(grep -c '^[a-zA-Z]' "requirements/$name") packages)"
  fi
done
exit $status
