"""Freeze the installer stub for this machine, with its sidecar OUTPUT.json (what CI publishes).

Usage: python scripts/freeze_stub.py -o OUTPUT [--compress]

Progress goes to stderr; the stub's facts (the sidecar's content) go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def import_checkout() -> None:
    """Import ``lockship.builder`` and ``lockship.stub`` from this checkout's folders.

    The build backend maps ``builder/`` and ``stub/`` to those names when it installs them;
    the reach preparations freeze from a copy of the checkout with a Python that has lockship's
    dependencies but not lockship itself (or an older copy of it), so the mapping is done here.
    """
    namespace = types.ModuleType("lockship")
    namespace.__path__ = []
    sys.modules["lockship"] = namespace
    for name in ("stub", "builder"):
        spec = importlib.util.spec_from_file_location(
            f"lockship.{name}",
            REPO / name / "__init__.py",
            submodule_search_locations=[str(REPO / name)],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        setattr(namespace, name, module)


import_checkout()

from lockship.builder.errors import StubError  # noqa: E402
from lockship.builder.stubs import (  # noqa: E402
    facts_path,
    freeze_stub,
    host_platform,
    stub_facts,
    stub_file_name,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help=f"the stub file to write, or a folder (DIR/) for {stub_file_name(host_platform())}",
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="compress the archive: a stub less than half the size that starts ~0.4 s slower",
    )
    args = parser.parse_args(argv)
    output = Path(args.output)
    if args.output.endswith(("/", os.sep)) or output.is_dir():
        output = output / stub_file_name(host_platform())
    started = time.monotonic()
    try:
        freeze_stub(
            output,
            on_line=lambda line: print(line, file=sys.stderr, flush=True),
            compress=args.compress,
        )
        facts = stub_facts(output)
    except StubError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    if facts is None:  # freeze_stub always writes the sidecar
        print(f"ERROR: {facts_path(output)} is missing", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"Took {took:.0f} s; facts in {facts_path(output)}", file=sys.stderr)
    print(json.dumps(facts.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
