"""Session fixtures: a real demo channel built offline, served over HTTP, solved and locked.

The factories live in ``tests/factories.py``. The session ``channel_server`` is shared: do not
set fault hooks on it; start your own ``ChannelServer(demo_channel)`` for fault tests.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

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
    write_pixi_lock,
)

DEMO_PLATFORM = "linux-64"

PIXI_TOML = """\
[workspace]
name = "lsdemo"
version = "1.2.3"
channels = ["{channel_url}"]
platforms = ["{platform}"]

[dependencies]
{dependencies}
"""


@pytest.fixture(scope="session")
def demo_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Indexed local channel with python (stand-in), lsdemo-hello, -config and -greet."""
    return build_demo_channel(tmp_path_factory.mktemp("demo-channel"))


@pytest.fixture(scope="session")
def channel_server(demo_channel: Path) -> Iterator[ChannelServer]:
    """``demo_channel`` served on http://127.0.0.1:<port> for the whole session."""
    with ChannelServer(demo_channel) as server:
        yield server


@pytest.fixture(scope="session")
def demo_records(demo_channel: Path, channel_server: ChannelServer) -> list[rattler.RepoDataRecord]:
    """Every demo package for linux-64, solved over HTTP (urls point at ``channel_server``)."""
    return channel_records(demo_channel, channel_server.url, DEMO_PLATFORM)


@pytest.fixture(scope="session")
def demo_lock(
    tmp_path_factory: pytest.TempPathFactory,
    channel_server: ChannelServer,
    demo_records: list[rattler.RepoDataRecord],
) -> Path:
    """A pixi workspace folder: ``pixi.lock`` (env "default", linux-64) and ``pixi.toml``."""
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
