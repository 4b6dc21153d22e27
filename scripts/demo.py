"""The main job on a built-in example, offline: channel -> pixi.lock -> installer -> prefix.

1. builds a small channel of real conda packages from the recipes in scripts/demo/recipes,
2. serves it on 127.0.0.1 and writes a pixi.lock for it (as `pixi lock` would),
3. runs `lockship build` on that lock (freezing the installer stub on first use),
4. runs the installer into a temporary prefix and runs programs from the installed environment.

Usage: python scripts/demo.py [--keep DIR] [--stub PATH]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rattler  # noqa: E402

from tests.factories import (  # noqa: E402
    ChannelServer,
    build_demo_channel,
    channel_records,
    write_pixi_lock,
)

PLATFORM = str(rattler.Subdir.current())  # the recipes compile for this machine


def _run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("$ " + " ".join(command), flush=True)
    return subprocess.run(command, check=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--stub", type=Path, help="use this frozen stub")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lockship-demo-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print("== building the demo channel from scripts/demo/recipes", flush=True)
        channel = build_demo_channel(work / "channel")
        with ChannelServer(channel) as server:
            records = channel_records(channel, server.url, PLATFORM)
            workspace = work / "workspace"
            workspace.mkdir(exist_ok=True)
            write_pixi_lock(workspace / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
            (workspace / "pixi.toml").write_text(
                '[workspace]\nname = "lsdemo"\nversion = "1.0.0"\n'
                f'channels = ["{server.url}/"]\nplatforms = ["{PLATFORM}"]\n'
            )
            print(f"== wrote {workspace / 'pixi.lock'} ({len(records)} packages)", flush=True)
            build = [sys.executable, "-m", "lockship.builder.cli", "build", str(workspace)]
            build += ["-o", str(work / "installers"), "--cache-dir", str(work / "cache")]
            if args.stub:
                build += ["--stub", str(args.stub)]
            installer = _run(build, stdout=subprocess.PIPE).stdout.strip().splitlines()[-1]
        prefix = work / "prefix"
        print(f"== installing into {prefix} (the channel server is stopped: offline)", flush=True)
        _run(["bash", installer, "-b", "-p", str(prefix)])
        print("== running programs from the installed environment", flush=True)
        script = (
            f'. "{prefix}/activate.sh" && lsdemo-hello && lsdemo-where && lsdemo-greet '
            '&& echo "LSDEMO_ACTIVATED=$LSDEMO_ACTIVATED"'
        )
        _run(["bash", "-c", script])
        print(f"== demo OK: {installer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
