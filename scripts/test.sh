#!/usr/bin/env bash
# Lint, type-check and run the whole test suite (the end-to-end tests freeze the real stub).
source "$(dirname "$0")/dev-env.sh"
ruff check .
ruff format --check .
mypy
exec python -m pytest "$@"
