"""Session fixtures: a real demo channel built offline, served over HTTP, solved and locked.

The factories live in ``tests/factories.py``. The session ``channel_server`` is shared: do not
set fault hooks on it; start your own ``ChannelServer(demo_channel)`` for fault tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rattler

# Plain `pytest` puts only tests/ on sys.path; make `tests.factories` (and the repo's own
# packages) importable the same way scripts/demo.py imports them.
_REPO_ROOT = str(Path(__file__).resolve().parents[1])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.factories import (  # noqa: E402
    ChannelServer,
    build_demo_channel,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from tests.runners import run_lockship  # noqa: E402

#: mount(size, *options) -> the mounted folder
MountTmpfs = Callable[..., Path]

#: This machine's platform: the demo recipes build for it, and tests that run what they build
#: (installers, installed packages) build for it too.
DEMO_PLATFORM = str(rattler.Subdir.current())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """End-to-end tests (real stub, real installers) run last."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


PIXI_TOML = """\
[workspace]
name = "lsdemo"
version = "1.2.3"
channels = ["{channel_url}"]
platforms = ["{platform}"]

[dependencies]
{dependencies}
"""


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[MountTmpfs]:
    """``mount(size, *options)``: a new tmpfs of that size under ``tmp_path`` (root only)."""
    mounted: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        opts = ",".join([f"size={size}", *options])
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", target]).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture(scope="session")
def demo_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Indexed local channel with python (stand-in), lsdemo-hello, -config and -greet."""
    if sys.platform != "linux":
        # The recipes are shell scripts compiling a C program with the system gcc, and the
        # tests install what they build with .sh installers run by bash.
        pytest.skip("the demo channel and .sh installers are Linux")
    return build_demo_channel(tmp_path_factory.mktemp("demo-channel"))


@pytest.fixture(scope="session")
def channel_server(demo_channel: Path) -> Iterator[ChannelServer]:
    """``demo_channel`` served on http://127.0.0.1:<port> for the whole session."""
    with ChannelServer(demo_channel) as server:
        yield server


@pytest.fixture(scope="session")
def demo_records(demo_channel: Path, channel_server: ChannelServer) -> list[rattler.RepoDataRecord]:
    """Every demo package for this machine, solved over HTTP (urls point at ``channel_server``)."""
    return channel_records(demo_channel, channel_server.url, DEMO_PLATFORM)


@pytest.fixture(scope="session")
def demo_lock(
    tmp_path_factory: pytest.TempPathFactory,
    channel_server: ChannelServer,
    demo_records: list[rattler.RepoDataRecord],
) -> Path:
    """A pixi workspace folder: ``pixi.lock`` (env "default", this machine) and ``pixi.toml``."""
    workspace = tmp_path_factory.mktemp("demo-workspace")
    write_pixi_lock(
        workspace / "pixi.lock",
        {DEMO_PLATFORM: demo_records},
        environment="default",
        channel_url=channel_server.url,
    )
    deps = "\n".join(f'{r.name.normalized} = "*"' for r in demo_records)
    (workspace / "pixi.toml").write_text(
        PIXI_TOML.format(
            channel_url=channel_server.url + "/", platform=DEMO_PLATFORM, dependencies=deps
        )
    )
    return workspace


# --- lockship itself -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def frozen_stub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real stub for this machine, frozen once (cached by source digest across sessions).

    For quick local iteration ``LOCKSHIP_TEST_STUB=python`` swaps in a script that runs the
    stub's sources with this interpreter (never in CI: the frozen stub is what users get).
    """
    from lockship.builder.network import NetworkOptions, make_client
    from lockship.builder.paths import default_cache_dir, host_platform
    from lockship.builder.settings import Settings
    from lockship.builder.stubs.lookup import find_stubs

    if os.environ.get("LOCKSHIP_TEST_STUB") == "python" and not os.environ.get("CI"):
        from lockship.builder.stubs.pack import host_unpacker, write_pack

        work = tmp_path_factory.mktemp("python-stub")
        script = work / "folder" / "lockship-stub"
        script.parent.mkdir()
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m lockship.stub "$@"\n')
        script.chmod(0o755)
        write_pack(work / "stub", host_unpacker(), script.parent)
        return work / "stub"
    # the lookup users get: --stub-dir / $LOCKSHIP_STUB_DIR, the cache, else a fresh freeze
    platform = host_platform()
    defaults = Settings()
    client = make_client(NetworkOptions(), timeout=defaults.timeout)
    found = find_stubs([platform], default_cache_dir(), client=client, retries=defaults.retries)
    return found[platform]


@pytest.fixture(scope="session")
def stub_program(frozen_stub: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The frozen stub's program, unpacked as an installer's header unpacks it: to run it
    directly on an installer file (``--installer``), as a Windows .exe runs on itself."""
    from lockship.builder.stubs.pack import unpack

    return unpack(frozen_stub, tmp_path_factory.mktemp("stub-program"))


@pytest.fixture(scope="session")
def download_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("download-cache")


@pytest.fixture(scope="session")
def demo_installer(
    tmp_path_factory: pytest.TempPathFactory,
    demo_lock: Path,
    frozen_stub: Path,
    download_cache: Path,
) -> Path:
    """One installer built from ``demo_lock`` with the real stub, shared by the session."""
    out = tmp_path_factory.mktemp("installers")
    result = run_lockship(
        "build", demo_lock, "-o", out, "--stub", frozen_stub, "--cache-dir", download_cache
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


class InstallerFactory:
    """Lock a channel (all its packages) and build an installer from it with the real stub."""

    def __init__(self, base: Path, stub: Path, cache: Path) -> None:
        self.base, self.stub, self.cache = base, stub, cache
        self.count = 0

    def channel_with(self, demo_channel: Path, *packages: dict[str, Any]) -> Path:
        """A copy of the demo channel plus hand-written packages (kwargs of write_conda_package)."""
        self.count += 1
        channel = self.base / f"channel{self.count}"
        shutil.copytree(demo_channel, channel)
        for package in packages:
            write_conda_package(channel, **package)
        index_channel(channel)
        return channel

    def build(
        self,
        channel: Path,
        *args: str | Path,
        specs: list[str] | None = None,
        virtual_packages: dict[str, str] | None = None,
    ) -> Path:
        self.count += 1
        workspace = self.base / f"ws{self.count}"
        workspace.mkdir()
        with ChannelServer(channel) as server:
            virtual = None
            if virtual_packages is not None:
                virtual = [
                    rattler.GenericVirtualPackage(
                        rattler.PackageName(name),
                        rattler.Version(version),
                        rattler.BuildString("0"),
                    )
                    for name, version in virtual_packages.items()
                ]
            records = channel_records(
                channel, server.url, DEMO_PLATFORM, specs, virtual_packages=virtual
            )
            write_pixi_lock(
                workspace / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url
            )
            (workspace / "pixi.toml").write_text(
                '[workspace]\nname = "lsdemo"\nversion = "1.2.3"\n'
            )
            result = run_lockship(
                "build",
                workspace,
                "--stub",
                self.stub,
                "-o",
                workspace,
                "--cache-dir",
                self.cache,
                *args,
            )
        assert result.returncode == 0, result.stderr
        return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def installer_factory(
    tmp_path_factory: pytest.TempPathFactory, frozen_stub: Path, download_cache: Path
) -> InstallerFactory:
    return InstallerFactory(tmp_path_factory.mktemp("factory"), frozen_stub, download_cache)
