"""The uninstaller written into each prefix: it removes exactly that prefix, after checking
that a lockship installer made it (``conda-meta/lockship``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from lockship.stub.shared.boundary import write_text_atomically
from lockship.stub.shared.manifest import Manifest

UNINSTALL_SH = """\
#!/bin/sh
# Removes the {comment} environment installed here by its lockship installer, and nothing else.
# Usage: sh uninstall.sh [-b]   (-b: do not ask for confirmation)
set -eu
name={quoted}
prefix=$(cd "$(dirname "$0")" && pwd -P)
batch=0
case "${{1:-}}" in
  -b|--batch) batch=1 ;;
  -h|--help) echo "usage: $0 [-b]  remove the environment $prefix"; exit 0 ;;
  "") ;;
  *) echo "ERROR: unknown option $1 (usage: $0 [-b])" >&2; exit 2 ;;
esac
if [ ! -f "$prefix/conda-meta/lockship" ]; then
  echo "ERROR: $prefix is not an environment installed by lockship; nothing removed" >&2
  exit 1
fi
if [ "$batch" = 0 ]; then
  printf 'Remove the %s environment %s and everything in it? [y/N] ' "$name" "$prefix"
  answer=
  read -r answer || true
  case $answer in y|Y|yes|YES) ;; *) echo "Nothing removed."; exit 1 ;; esac
fi
if [ -d "$prefix/.lockship-snapshot" ]; then
  echo "An update of $prefix was interrupted; its saved previous state is removed with it"
fi
cd /
rm -rf -- "$prefix"
echo "Removed $prefix"
"""

UNINSTALL_BAT = """\
@echo off
rem Removes the {comment} environment installed here by its lockship installer, and nothing else.
rem Usage: uninstall.bat [-b]   (-b: do not ask for confirmation)
setlocal
set "BATCH="
if /i "%~1"=="-b" set "BATCH=1"
if /i "%~1"=="--batch" set "BATCH=1"
set "PREFIX=%~dp0"
set "PREFIX=%PREFIX:~0,-1%"
if not exist "%PREFIX%\\conda-meta\\lockship" (
  echo ERROR: %PREFIX% is not an environment installed by lockship; nothing removed 1>&2
  exit /b 1
)
set "ANSWER="
if not defined BATCH (
  set /p "ANSWER=Remove the {bat} environment %PREFIX% and everything in it? [y/N] "
)
if not defined BATCH if /i not "%ANSWER%"=="y" (
  echo Nothing removed.
  exit /b 1
)
cd /d "%PREFIX%\\.."
start "" /b cmd /c rmdir /s /q "%PREFIX%" ^& echo Removed %PREFIX%
"""


def write_uninstaller(prefix: Path, manifest: Manifest) -> Path:
    """``uninstall.sh`` (or ``.bat``) in ``prefix``; the environment's name is quoted in it, so
    whatever the name holds stays text."""
    comment = "".join(c if c.isprintable() else "?" for c in manifest.name)
    if manifest.platform.startswith("win-"):
        path = prefix / "uninstall.bat"
        safe = _batch_text(comment)
        text = UNINSTALL_BAT.format(comment=safe, bat=safe)
        write_text_atomically(path, text.replace("\n", "\r\n"))
    else:
        path = prefix / "uninstall.sh"
        text = UNINSTALL_SH.format(comment=comment, quoted=shlex.quote(manifest.name))
        write_text_atomically(path, text, mode=0o755)
    return path


def _batch_text(value: str) -> str:
    """``value`` inside a quoted ``set`` of a batch file: ``%`` doubled, quotes dropped."""
    return value.replace("%", "%%").replace('"', "")
