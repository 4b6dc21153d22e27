"""The uninstaller written into each prefix: it removes exactly that prefix, after checking
that a lockship installer made it (``conda-meta/lockship``)."""

from __future__ import annotations

from pathlib import Path

from lockship.stub.shared.boundary import write_text_atomically
from lockship.stub.shared.manifest import Manifest

UNINSTALL_SH = """\
#!/bin/sh
# Removes the {name} environment installed here by its lockship installer, and nothing else.
# Usage: sh uninstall.sh [-b]   (-b: do not ask for confirmation)
set -eu
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
  printf 'Remove the {name} environment %s and everything in it? [y/N] ' "$prefix"
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
rem Removes the {name} environment installed here by its lockship installer, and nothing else.
rem Usage: uninstall.bat [-b]   (-b: do not ask for confirmation)
setlocal
set "PREFIX=%~dp0"
set "PREFIX=%PREFIX:~0,-1%"
if not exist "%PREFIX%\\conda-meta\\lockship" (
  echo ERROR: %PREFIX% is not an environment installed by lockship; nothing removed 1>&2
  exit /b 1
)
if /i not "%~1"=="-b" (
  set /p "ANSWER=Remove the {name} environment %PREFIX% and everything in it? [y/N] "
)
if /i not "%~1"=="-b" if /i not "%ANSWER%"=="y" (
  echo Nothing removed.
  exit /b 1
)
cd /d "%PREFIX%\\.."
start "" /b cmd /c rmdir /s /q "%PREFIX%" ^& echo Removed %PREFIX%
"""


def write_uninstaller(prefix: Path, manifest: Manifest) -> Path:
    if manifest.platform.startswith("win-"):
        path = prefix / "uninstall.bat"
        text = UNINSTALL_BAT.format(name=manifest.name).replace("\n", "\r\n")
        write_text_atomically(path, text)
    else:
        path = prefix / "uninstall.sh"
        write_text_atomically(path, UNINSTALL_SH.format(name=manifest.name), mode=0o755)
    return path
