"""PyPI packages locked as sources (sdists, local projects, git) built into wheels at build
time, installed by real installers and imported from the installed environment.

The projects build with an in-tree backend (``backend-path``, no build requirements), so
nothing is downloaded but from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from lockship.stub.shared.payload import read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
)
from tests.runners import Run, run_installer, run_lockship

PLATFORM = DEMO_PLATFORM
OTHER = "osx-arm64"
PY = f"cp{sys.version_info[0]}{sys.version_info[1]}"
MACHINE = {"linux-64": "x86_64", "linux-aarch64": "aarch64"}.get(PLATFORM, "x86_64")

BACKEND = '''\
"""A build backend for tests: the files under src/ in a wheel tagged {tag!r}."""
import base64, hashlib, io, os, tarfile, zipfile

NAME, VERSION, TAG = {name!r}, {version!r}, {tag!r}
DIST = NAME.replace("-", "_")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_requires_for_build_wheel(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    info = f"{{DIST}}-{{VERSION}}.dist-info"
    files = {{}}
    src = os.path.join(ROOT, "src")
    for folder, _, names in os.walk(src):
        for n in names:
            path = os.path.join(folder, n)
            with open(path, "rb") as f:
                files[os.path.relpath(path, src).replace(os.sep, "/")] = f.read()
    metadata = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n"
    files[f"{{info}}/METADATA"] = metadata.encode()
    pure = "true" if TAG.endswith("-any") else "false"
    files[f"{{info}}/WHEEL"] = (
        f"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: {{pure}}\\nTag: {{TAG}}\\n"
    ).encode()
    record = ""
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += f"{{path}},sha256={{digest}},{{len(data)}}\\n"
    files[f"{{info}}/RECORD"] = (record + f"{{info}}/RECORD,,\\n").encode()
    name = f"{{DIST}}-{{VERSION}}-{{TAG}}.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
    print("test backend built", name)
    return name
'''


def write_project(
    folder: Path, name: str, version: str, modules: dict[str, str], tag: str = "py3-none-any"
) -> Path:
    """A project whose in-tree backend builds the files under ``src/`` into a wheel."""
    (folder / "_backend").mkdir(parents=True, exist_ok=True)
    (folder / "_backend" / "backend.py").write_text(
        BACKEND.format(name=name, version=version, tag=tag)
    )
    (folder / "pyproject.toml").write_text(
        '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["_backend"]\n'
    )
    for path, text in modules.items():
        (folder / "src" / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / "src" / path).write_text(text)
    return folder


def write_sdist(project: Path, out: Path, name: str, version: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    sdist = out / f"{name.replace('-', '_')}-{version}.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(project, arcname=f"{name.replace('-', '_')}-{version}")
    return sdist


def git(*args: str | Path, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env |= {"GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        ["git", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def git_repository(folder: Path) -> tuple[Path, str]:
    """A repository with two commits; the first one's project is the one locked."""
    write_project(folder, "git-pkg", "3.0", {"git_pkg.py": "ORIGIN = 'first commit'\n"})
    git("init", "-q", "-b", "main", cwd=folder)
    git("add", "-A", cwd=folder)
    git("commit", "-qm", "first", cwd=folder)
    commit = git("rev-parse", "HEAD", cwd=folder)
    (folder / "src" / "git_pkg.py").write_text("ORIGIN = 'second commit'\n")
    git("commit", "-qam", "second", cwd=folder)
    return folder, commit


def one_error(run: Run) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return run.error_lines[0]


def build(lock: Path, tmp_path: Path, stub: Path, *args: str | Path, out: str = "out") -> Run:
    return run_lockship(
        "build",
        lock,
        "--stub",
        stub,
        "--cache-dir",
        tmp_path / "cache",
        "-o",
        tmp_path / out,
        *args,
    )


@pytest.fixture
def stand_in_stub(tmp_path: Path) -> Path:
    """Not a real program: enough for builds that fail or are only looked at."""
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    return stub


@pytest.fixture
def workspace(tmp_path: Path, demo_lock: Path) -> Path:
    shutil.copytree(demo_lock, tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.e2e
def test_sdist_path_and_git_sources_are_built_installed_and_imported(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    served = tmp_path / "channel"
    shutil.copytree(demo_channel, served)
    sdist_project = write_project(
        tmp_path / "sdist-src", "sdist-pkg", "1.0", {"sdist_pkg/__init__.py": "VALUE = 'sdist'\n"}
    )
    sdist = write_sdist(sdist_project, served, "sdist-pkg", "1.0")
    ws = tmp_path / "ws"
    write_project(ws / "proj", "local-proj", "2.0", {"local_proj.py": "VALUE = 'path'\n"})
    tag = f"{PY}-{PY}-linux_{MACHINE}"
    write_project(ws / "native", "native-pkg", "0.1", {"native_pkg.py": "VALUE = 'nat'\n"}, tag)
    repo, commit = git_repository(tmp_path / "repo")
    with ChannelServer(served) as server:
        records = channel_records(served, server.url, PLATFORM)
        lock = write_pixi_lock(ws / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
        add_pypi_packages(
            lock,
            PLATFORM,
            [
                ("sdist-pkg", "1.0", f"{server.url}/{sdist.name}", sha),
                ("local-proj", "2.0", "./proj", None),
                ("native-pkg", "0.1", "./native", None),
                ("git-pkg", "3.0", f"git+{repo.as_uri()}#{commit}", None),
            ],
        )
        run = build(lock, tmp_path, frozen_stub)
        assert run.returncode == 0, run.stderr
        again = build(lock, tmp_path, frozen_stub, out="out2")
    assert again.returncode == 0, again.stderr
    assert "Building a wheel" in run.stdout + run.stderr
    assert "Building a wheel" not in again.stdout + again.stderr  # cached by the source's hash
    assert "test backend built" not in run.stdout + run.stderr  # backend output goes to a log
    installer = Path(run.stdout.strip().splitlines()[-1])
    info = run_installer(installer, "--info")
    for name in ("sdist_pkg", "local_proj", "native_pkg", "git_pkg"):
        line = next(ln for ln in info.stdout.splitlines() if ln.strip().startswith(name))
        assert line.rstrip().endswith("(PyPI, built from source)"), info.stdout
    listed = json.loads(run_installer(installer, "--info", "--json").stdout)
    assert len(listed["pypi_built_from_source"]) == 4
    assert f"pypi/native_pkg-0.1-{tag}.whl" in listed["pypi_wheels"]
    prefix = tmp_path / "env"
    result = run_installer(installer, "-b", "-p", prefix)
    assert result.returncode == 0, result.stderr
    code = "import sdist_pkg, local_proj, native_pkg, git_pkg; "
    code += "print(sdist_pkg.VALUE, local_proj.VALUE, native_pkg.VALUE, git_pkg.ORIGIN)"
    imported = subprocess.run(
        [prefix / "bin" / "python", "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert imported.stdout.strip() == "sdist path nat first commit", imported.stderr


def test_an_sdist_that_does_not_match_its_hash_is_not_built(
    tmp_path: Path, workspace: Path, stand_in_stub: Path
) -> None:
    project = write_project(tmp_path / "src", "hashed", "1.0", {"hashed.py": "X = 1\n"})
    sdist = write_sdist(project, workspace / "dist", "hashed", "1.0")
    add_pypi_packages(
        workspace / "pixi.lock", PLATFORM, [("hashed", "1.0", f"./dist/{sdist.name}", "ab" * 32)]
    )
    line = one_error(build(workspace, tmp_path, stand_in_stub))
    assert f"{sdist.name} does not match the lockfile" in line
    assert not (tmp_path / "cache" / "built").exists()


def test_a_failing_backend_is_reported_in_one_line_with_its_log(
    tmp_path: Path, workspace: Path, stand_in_stub: Path
) -> None:
    project = write_project(workspace / "broken", "broken", "1.0", {"broken.py": ""})
    backend = project / "_backend" / "backend.py"
    backend.write_text(backend.read_text() + "\nraise SystemExit('the backend is broken')\n")
    add_pypi_packages(workspace / "pixi.lock", PLATFORM, [("broken", "1.0", "./broken", None)])
    line = one_error(build(workspace, tmp_path, stand_in_stub))
    assert "building a wheel of broken 1.0 (./broken) failed: the backend is broken" in line
    assert "broken.log" in line


def test_a_git_source_at_a_missing_commit_is_refused(
    tmp_path: Path, workspace: Path, stand_in_stub: Path
) -> None:
    repo, _ = git_repository(tmp_path / "repo")
    location = f"git+{repo.as_uri()}#{'0' * 40}"
    add_pypi_packages(workspace / "pixi.lock", PLATFORM, [("git-pkg", "3.0", location, None)])
    line = one_error(build(workspace, tmp_path, stand_in_stub))
    assert f"building a wheel of git-pkg 3.0 ({location}) failed: git fetch failed" in line


def test_a_non_pure_built_wheel_is_refused_for_another_platform(
    tmp_path: Path, demo_channel: Path, stand_in_stub: Path
) -> None:
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(channel, "mac-only", "1.0", subdir=OTHER, files={"share/m.txt": "m"})
    write_conda_package(channel, "python", "3.11.0", subdir=OTHER, files={"bin/python": "p"})
    index_channel(channel)
    ws = tmp_path / "ws"
    tag = f"{PY}-{PY}-linux_{MACHINE}"
    write_project(ws / "native", "native-pkg", "0.1", {"native_pkg.py": "X = 1\n"}, tag)
    with ChannelServer(channel) as server:
        records = {
            PLATFORM: channel_records(channel, server.url, PLATFORM),
            OTHER: channel_records(channel, server.url, OTHER, ["mac-only", "python"]),
        }
        lock = write_pixi_lock(ws / "pixi.lock", records, channel_url=server.url)
        add_pypi_packages(lock, PLATFORM, [("native-pkg", "0.1", "./native", None)])
        text = lock.read_text().replace(
            f"      {OTHER}:\n", f"      {OTHER}:\n      - pypi: ./native\n"
        )
        lock.write_text(text)
        run = build(lock, tmp_path, stand_in_stub, "-p", OTHER)
        line = one_error(run)
        assert f"PyPI sources that build into {PLATFORM} wheels cannot ship to {OTHER}" in line
        assert f"native-pkg (native_pkg-0.1-{tag}.whl)" in line
        assert f"build each wheel on {OTHER} and pass it with --inject" in line
        # the wheel built on that platform, passed as the message says
        mac = build_wheel_of(tmp_path, "native-pkg", "0.1", "cp311-cp311-macosx_11_0_arm64")
        stubs = ["--stub", f"{OTHER}={stand_in_stub}", "--stub", f"{PLATFORM}={stand_in_stub}"]
        both = ["-p", OTHER, "-p", PLATFORM, "--inject", mac, *stubs]
        common = ["--cache-dir", tmp_path / "cache", "-o", tmp_path / "injected"]
        injected = run_lockship("build", lock, *both, *common)
        assert injected.returncode == 0, injected.stderr
        # a wheel that fits neither platform is never shipped
        unfitting = build_wheel_of(tmp_path, "native-pkg", "0.1", "cp39-cp39-win_amd64")
        ignored = build(lock, tmp_path, stand_in_stub, "-p", OTHER, "--inject", unfitting)
    assert "cannot ship to osx-arm64" in one_error(ignored)
    shipped = {
        Path(p).name: [e.name for e in read_payload(Path(p)).entries if e.name.startswith("pypi/")]
        for p in injected.stdout.split()
    }
    assert shipped == {
        f"default-0.0.0-{OTHER}.sh": [f"pypi/{mac.name}"],
        f"default-0.0.0-{PLATFORM}.sh": [f"pypi/native_pkg-0.1-{tag}.whl"],
    }


def test_a_locked_wheel_for_another_python_is_refused(
    tmp_path: Path, workspace: Path, stand_in_stub: Path
) -> None:
    wheel = workspace / "dist" / f"other-1.0-cp39-cp39-manylinux_2_17_{MACHINE}.whl"
    wheel.parent.mkdir()
    shutil.copy(
        build_wheel_of(tmp_path, "other", "1.0", f"cp39-cp39-manylinux_2_17_{MACHINE}"), wheel
    )
    add_pypi_packages(
        workspace / "pixi.lock", PLATFORM, [("other", "1.0", f"./dist/{wheel.name}", None)]
    )
    line = one_error(build(workspace, tmp_path, stand_in_stub))
    assert f"PyPI wheels that do not fit python 3.11 on {PLATFORM}: {wheel.name}" in line


def build_wheel_of(tmp_path: Path, name: str, version: str, tag: str) -> Path:
    """A wheel built by the test backend, outside lockship."""
    modules = {f"{name.replace('-', '_')}.py": ""}
    project = write_project(tmp_path / f"{name}-{tag}-src", name, version, modules, tag)
    out = tmp_path / f"{name}-{tag}-wheel"
    out.mkdir()
    code = "import sys; sys.path.insert(0, '_backend'); import backend; "
    code += f"print(backend.build_wheel({str(out)!r}))"
    subprocess.run([sys.executable, "-c", code], cwd=project, check=True, capture_output=True)
    return next(out.glob("*.whl"))


@pytest.mark.e2e
def test_conda_lock_pip_packages_are_shipped(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    served = tmp_path / "channel"
    shutil.copytree(demo_channel, served)
    wheel = build_wheel_of(tmp_path, "pip-wheel", "1.0", "py3-none-any")
    shutil.copy(wheel, served / wheel.name)
    project = write_project(tmp_path / "s", "pip-sdist", "2.0", {"pip_sdist.py": "V = 2\n"})
    sdist = write_sdist(project, served, "pip-sdist", "2.0")
    with ChannelServer(served) as server:
        records = channel_records(served, server.url, PLATFORM)
        packages = [
            {
                "name": r.name.normalized,
                "version": str(r.version),
                "manager": "conda",
                "platform": PLATFORM,
                "dependencies": {},
                "url": r.url,
                "hash": {"md5": r.md5.hex() if r.md5 else "0" * 32, "sha256": r.sha256.hex()},
                "category": "main",
                "optional": False,
            }
            for r in records
        ]
        for name, version, file in (("pip-wheel", "1.0", wheel), ("pip-sdist", "2.0", sdist)):
            packages.append(
                {
                    "name": name,
                    "version": version,
                    "manager": "pip",
                    "platform": PLATFORM,
                    "dependencies": {},
                    "url": f"{server.url}/{file.name}",
                    "hash": {"sha256": hashlib.sha256(file.read_bytes()).hexdigest()},
                    "category": "main",
                    "optional": False,
                }
            )
        document = {
            "version": 1,
            "metadata": {
                "content_hash": {PLATFORM: "x"},
                "channels": [{"url": "local", "used_env_vars": []}],
                "platforms": [PLATFORM],
                "sources": ["environment.yml"],
            },
            "package": packages,
        }
        lock = tmp_path / "conda-lock.yml"
        lock.write_text(yaml.safe_dump(document, sort_keys=False))
        run = build(lock, tmp_path, frozen_stub)
    assert run.returncode == 0, run.stderr
    installer = Path(run.stdout.strip().splitlines()[-1])
    listed = json.loads(run_installer(installer, "--info", "--json").stdout)
    assert sorted(listed["pypi_wheels"]) == [
        "pypi/pip_sdist-2.0-py3-none-any.whl",
        f"pypi/{wheel.name}",
    ]
    assert listed["pypi_built_from_source"] == ["pypi/pip_sdist-2.0-py3-none-any.whl"]
    prefix = tmp_path / "env"
    assert run_installer(installer, "-b", "-p", prefix).returncode == 0
    imported = subprocess.run(
        [prefix / "bin" / "python", "-c", "import pip_wheel, pip_sdist; print(pip_sdist.V)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert imported.stdout.strip() == "2", imported.stderr


def test_conda_lock_pip_problems_name_each_package_once(tmp_path: Path) -> None:
    from lockship.builder.errors import LockfileError
    from lockship.builder.inputs.condalock import read_conda_lock

    pip = [
        {"name": "certifi", "version": "1", "manager": "pip", "platform": p, "category": "main"}
        for p in ("linux-64", "osx-arm64", "win-64")
    ]
    lock = tmp_path / "conda-lock.yml"
    document = {"version": 1, "metadata": {"platforms": ["linux-64"]}, "package": pip}
    lock.write_text(yaml.safe_dump(document))
    with pytest.raises(LockfileError) as caught:
        read_conda_lock(lock, ["main"])
    assert str(caught.value).count("certifi") == 1
    assert "lists pip packages without a url or platform: certifi;" in str(caught.value)
