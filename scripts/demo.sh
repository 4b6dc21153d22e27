#!/usr/bin/env bash
# The main job on the built-in example, offline: demo channel -> pixi.lock -> installer -> prefix.
source "$(dirname "$0")/dev-env.sh"
exec python scripts/demo.py "$@"
