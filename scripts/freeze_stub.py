"""Freeze the installer stub for this machine, with its sidecar OUTPUT.json (what CI publishes).

Usage: python scripts/freeze_stub.py -o OUTPUT [--unpacker PATH]

The same as ``lockship freeze-stub -o OUTPUT [--unpacker PATH]`` (which pip users have), runnable
from a checkout without installing it. Progress goes to stderr; the stub's facts (the sidecar's
content) go to stdout as JSON.
"""

from __future__ import annotations

import importlib.util
import sys
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


def main(argv: Sequence[str] | None = None) -> int:
    import_checkout()
    from lockship.builder.cli import main as lockship_main

    return lockship_main(["freeze-stub", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
