"""What runs around the package installation: .pyc compilation, the builder's post-install
script, and the uninstaller written into the prefix."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from lockship.stub.errors import InstallError
from lockship.stub.manifest import Manifest
from lockship.stub.progress import Reporter

# no .json suffix: conda, mamba and rattler read every conda-meta/*.json as a package record
MARKER = Path("conda-meta") / "lockship"


class PostInstallError(InstallError):
    def __init__(self, script: str, code: int) -> None:
        self.exit_code = code if 0 < code < 256 else 1
        super().__init__(
            f"the post-install script {script} failed with exit code {code}; "
            "see its output above (run the installer with --no-post-install to skip it)"
        )


def python_executable(prefix: Path, platform: str) -> Path | None:
    candidate = prefix / ("python.exe" if platform.startswith("win-") else "bin/python")
    return candidate if candidate.exists() else None


def python_sources(prefix: Path) -> list[Path]:
    """The .py files of noarch python packages, as recorded in conda-meta."""
    sources: list[Path] = []
    for meta in sorted((prefix / "conda-meta").glob("*.json")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        if data.get("noarch") != "python" and (data.get("noarch") or {}) != {"type": "python"}:
            continue
        sources.extend(prefix / f for f in data.get("files", []) if f.endswith(".py"))
    return [s for s in sources if s.is_file()]


def compile_pyc(prefix: Path, platform: str, reporter: Reporter, extra: Sequence[Path] = ()) -> int:
    """Compile the noarch python sources (and ``extra``) with the environment's interpreter."""
    python = python_executable(prefix, platform)
    if python is None:
        return 0
    sources = python_sources(prefix) + [p for p in extra if p.is_file()]
    if not sources:
        return 0
    reporter.start("Compiling .pyc", len(sources), unit="file")
    process = subprocess.Popen(
        [str(python), "-Wi", "-m", "compileall", "-l", "-i", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    # an interpreter that exits at once (e.g. it needs a newer glibc) closes the pipe early
    with contextlib.suppress(BrokenPipeError):
        process.stdin.write("\n".join(str(s) for s in sources) + "\n")
        process.stdin.close()
    output = []
    for line in process.stdout:
        if line.startswith("Compiling "):
            reporter.advance(1)
        else:
            output.append(line.rstrip())
    code = process.wait()
    reporter.finish()
    if code != 0:
        reporter.message(
            "Some .py files did not compile (they still work): " + " ".join(output)[:500]
        )
    return len(sources)


def run_post_install(
    script: Path, prefix: Path, manifest: Manifest, *, unattended: bool, reporter: Reporter
) -> None:
    """Run the builder's post-install script; its output goes straight to the user."""
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "INSTALLER_NAME": manifest.name,
        "INSTALLER_VERSION": manifest.version,
        "INSTALLER_PLATFORM": manifest.platform,
        "INSTALLER_UNATTENDED": "1" if unattended else "0",
    }
    if script.suffix == ".bat":
        command = ["cmd.exe", "/d", "/c", str(script)]
    elif script.suffix == ".ps1":
        command = [
            "powershell.exe",
            "-NoProfile",
            "-ExecutionPolicy",
            "Bypass",
            "-File",
            str(script),
        ]
    else:
        command = ["/bin/sh", str(script)]
    reporter.message(f"Running the post-install script {script.name}")
    sys.stdout.flush()
    code = subprocess.run(command, env=env, cwd=prefix, check=False).returncode
    if code != 0:
        raise PostInstallError(script.name, code)


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
        with open(path, "w", encoding="utf-8", newline="\r\n") as f:
            f.write(UNINSTALL_BAT.format(name=manifest.name))
    else:
        path = prefix / "uninstall.sh"
        path.write_text(UNINSTALL_SH.format(name=manifest.name), encoding="utf-8")
        path.chmod(0o755)
    return path


def write_marker(prefix: Path, manifest: Manifest) -> None:
    """Record which installer made this prefix (``-u`` checks it)."""
    data = {
        "name": manifest.name,
        "version": manifest.version,
        "platform": manifest.platform,
        "environment": manifest.environment,
        "lockship_version": manifest.lockship_version,
        "packages": sorted(p.file_name for p in manifest.packages),
    }
    (prefix / MARKER).write_text(
        json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def read_marker(prefix: Path) -> dict[str, object] | None:
    try:
        data = json.loads((prefix / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
