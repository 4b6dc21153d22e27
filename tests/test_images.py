"""``lockship build --image``, end to end: real conda packages locked and served on 127.0.0.1,
a base image made from Debian's own packages, the image loaded into podman and run, pushed to
Debian's docker-registry on 127.0.0.1 and pulled back with skopeo."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import rattler
from lockship.builder.image.layers import LayerCache

from tests.conftest import DEMO_PLATFORM
from tests.containers import (
    APP_USER,
    Docker,
    Podman,
    Registry,
    debian_base,
    docker_config,
    missing_tools,
    oci_index,
    skopeo,
)
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_wheel,
)
from tests.runners import Run, load_script, run_lockship

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(missing_tools()) or os.geteuid() != 0,
        reason=f"needs root and {', '.join(missing_tools()) or 'the container tools'} "
        "(.ci/run installs them: scripts/container-tools.sh)",
    ),
]

#: an activate.d script that does more than set a variable, and an env_vars.d variable
ACTIVATION_PACKAGE = {
    "name": "lsdemo-env",
    "version": "1.0",
    "files": {
        "etc/conda/activate.d/lsdemo-env.sh": 'export LSDEMO_HOME="$CONDA_PREFIX/share"\n'
        'mkdir -p "$HOME/.lsdemo" 2>/dev/null || true\n',
        "etc/conda/env_vars.d/lsdemo-env.json": '{"LSDEMO_MODE": "production"}\n',
    },
}


def extra_package(version: str, payload: str = "x" * 20000) -> dict[str, object]:
    """A package whose version is all that changes between two releases of the env."""
    return {
        "name": "lsdemo-data",
        "version": version,
        "files": {"share/lsdemo-data/data.txt": f"{version}\n{payload}\n"},
    }


class Workspace:
    """A channel (the demo's plus ``packages``) served on 127.0.0.1 and a pixi workspace
    locking all of it, with a locked local wheel ``app`` (module ``app``)."""

    def __init__(self, folder: Path, demo_channel: Path, *packages: dict[str, object]) -> None:
        self.folder = folder
        self.channel = folder / "channel"
        shutil.copytree(demo_channel, self.channel)
        for package in packages:
            write_conda_package(self.channel, **package)  # type: ignore[arg-type]
        index_channel(self.channel)
        self.server = ChannelServer(self.channel)

    def lock(
        self,
        name: str = "lsdemo",
        version: str = "1.2.3",
        wheel: bool = True,
        glibc: str | None = None,
        specs: list[str] | None = None,
    ) -> Path:
        workspace = self.folder / f"ws-{version}"
        virtual = None
        if glibc is not None:  # the machine the lock is made for has this glibc
            virtual = [
                rattler.GenericVirtualPackage(
                    rattler.PackageName("__glibc"), rattler.Version(glibc), rattler.BuildString("0")
                )
            ]
        records = channel_records(
            self.channel, self.server.url, DEMO_PLATFORM, specs, virtual_packages=virtual
        )
        write_pixi_lock(
            workspace / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=self.server.url
        )
        (workspace / "pixi.toml").write_text(
            f'[workspace]\nname = "{name}"\nversion = "{version}"\n'
        )
        if wheel:
            built = write_wheel(
                workspace / "dist", "app", "1.0", modules={"app.py": "VALUE = 'from the wheel'\n"}
            )
            add_pypi_packages(
                workspace / "pixi.lock",
                DEMO_PLATFORM,
                [("app", "1.0", f"./dist/{built.name}", None)],
            )
        return workspace


@pytest.fixture
def workspace(tmp_path: Path, demo_channel: Path) -> Iterator[Workspace]:
    made = Workspace(tmp_path / "w", demo_channel, ACTIVATION_PACKAGE, extra_package("1.0"))
    with made.server:
        yield made


@pytest.fixture(scope="session")
def base_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debian_base(tmp_path_factory.mktemp("base") / "layout")


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    engine = Podman(tmp_path_factory.mktemp("podman"))
    yield engine
    engine.close()


def build(
    workspace: Path,
    out: Path,
    *args: str | Path,
    cache: Path | None = None,
    cwd: Path | None = None,
) -> Run:
    return run_lockship(
        "build",
        workspace,
        "-o",
        out,
        "--cache-dir",
        cache or out.parent / "cache",
        *args,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
        cwd=cwd,
    )


def built(run: Run) -> Path:
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip().splitlines()[-1])


def manifests(archive: Path) -> list[dict[str, object]]:
    """The image manifests an archive holds (through an index), as JSON."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, object]:
            member = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            return dict(json.load(member))

        found = []
        for descriptor in oci_index(archive)["manifests"]:  # type: ignore[attr-defined]
            document = blob(descriptor["digest"])
            if "manifests" in document:
                found += [blob(d["digest"]) for d in document["manifests"]]  # type: ignore[attr-defined]
            else:
                found.append(document)
        return found


def config_of(archive: Path) -> dict[str, object]:
    (manifest,) = manifests(archive)
    with tarfile.open(archive) as tar:
        digest = manifest["config"]["digest"].split(":")[1]  # type: ignore[index]
        member = tar.extractfile(f"blobs/sha256/{digest}")
        assert member is not None
        return dict(json.load(member))


def test_the_image_runs_the_environment_as_root_and_as_a_user(
    workspace: Workspace, base_image: Path, podman: Podman, tmp_path: Path
) -> None:
    run = build(workspace.lock(), tmp_path / "out", "--image-only", "--base", base_image)
    image = built(run)
    assert image.name == f"lsdemo-1.2.3-{DEMO_PLATFORM}.oci.tar"
    assert "lsdemo-env.sh does more than set variables" in run.stderr
    assert sorted(p.name for p in image.parent.iterdir()) == [
        "SHA256SUMS",
        f"lsdemo-1.2.3-{DEMO_PLATFORM}.oci.cdx.json",
        image.name,
    ]
    sbom = json.loads((image.parent / f"lsdemo-1.2.3-{DEMO_PLATFORM}.oci.cdx.json").read_text())
    root = sbom["metadata"]["component"]
    assert root["description"].startswith(f"OCI image of lsdemo 1.2.3 for {DEMO_PLATFORM}")
    # the archive's sha256, computed while it was written, is the file's
    sha256 = hashlib.sha256(image.read_bytes()).hexdigest()
    assert root["hashes"] == [{"alg": "SHA-256", "content": sha256}]
    assert f"{sha256}  {image.name}" in (image.parent / "SHA256SUMS").read_text().splitlines()
    assert {c["name"] for c in sbom["components"]} >= {"lsdemo-hello", "lsdemo-env", "app"}
    assert podman.load(image) == "localhost/lsdemo:1.2.3"
    hello = podman.run("run", "--rm", "--net", "none", "lsdemo:1.2.3", "lsdemo-hello")
    assert hello.stdout.strip() == "lsdemo-hello from /opt/lsdemo"
    for user in ([], ["--user", APP_USER]):
        env = podman.run("run", "--rm", "--net", "none", *user, "lsdemo:1.2.3", "env").stdout
        variables = dict(line.split("=", 1) for line in env.splitlines() if "=" in line)
        assert variables["PATH"] == "/opt/lsdemo/bin:/usr/local/bin:/usr/bin:/bin"
        assert variables["CONDA_PREFIX"] == "/opt/lsdemo"
        assert variables["LSDEMO_ACTIVATED"] == "yes"  # activate.d
        assert variables["LSDEMO_MODE"] == "production"  # env_vars.d
        assert variables["LSDEMO_HOME"] == "/opt/lsdemo/share"
        wheel = podman.run(
            "run",
            "--rm",
            "--net",
            "none",
            *user,
            "lsdemo:1.2.3",
            "python",
            "-c",
            "import app, lsdemo_greet; print(app.VALUE, app.__file__)",
        )
        assert wheel.stdout.strip() == (
            "from the wheel /opt/lsdemo/lib/python3.11/site-packages/app.py"
        )
        greet = podman.run("run", "--rm", "--net", "none", *user, "lsdemo:1.2.3", "lsdemo-greet")
        assert greet.stdout.strip() == "greetings from lsdemo_greet"
    listing = podman.run(
        "run",
        "--rm",
        "--net",
        "none",
        "lsdemo:1.2.3",
        "sh",
        "-c",
        "cat /opt/lsdemo/activate.env; ls /opt/lsdemo/conda-meta "
        "/opt/lsdemo/lib/python3.11/site-packages/__pycache__",
    ).stdout
    assert "LSDEMO_MODE=production\n" in listing
    assert (
        "PATH=/opt/lsdemo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        in listing
    )
    assert "lsdemo-hello-1.0.0-" in listing and "history" in listing
    assert "app.cpython-311.pyc" in listing


@pytest.mark.skipif(
    shutil.which("dockerd") is None,
    reason="needs Debian's docker.io for dockerd (scripts/container-tools.sh installs it)",
)
def test_docker_loads_and_runs_the_image(
    workspace: Workspace, base_image: Path, tmp_path: Path
) -> None:
    """``docker load`` of a Docker Engine older than 25, which reads no OCI layout: the archive's
    ``manifest.json`` is what it loads."""
    image = built(build(workspace.lock(), tmp_path / "out", "--image-only", "--base", base_image))
    docker = Docker(tmp_path / "docker")
    try:
        server = docker.run("version", "--format", "{{.Server.Version}}").stdout.strip()
        loaded = docker.run("load", "-i", str(image))
        hello = docker.run("run", "--rm", "--network", "none", "lsdemo:1.2.3", "lsdemo-hello")
        as_user = docker.run(
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            APP_USER,
            "lsdemo:1.2.3",
            "python",
            "-c",
            "import os, app; print(app.VALUE, os.environ['CONDA_PREFIX'], os.getuid())",
        )
        labels = docker.run(
            "image", "inspect", "--format", "{{json .Config.Labels}}", "lsdemo:1.2.3"
        )
    finally:
        docker.close()
    assert int(server.split(".")[0]) < 25, server  # the engine that needs manifest.json
    assert loaded.stdout.strip() == "Loaded image: lsdemo:1.2.3"
    assert hello.stdout.strip() == "lsdemo-hello from /opt/lsdemo"
    assert as_user.stdout.strip() == "from the wheel /opt/lsdemo 1000"
    assert json.loads(labels.stdout)["org.opencontainers.image.version"] == "1.2.3"


def test_image_settings_reach_the_config(
    workspace: Workspace, base_image: Path, podman: Podman, tmp_path: Path
) -> None:
    ws = workspace.lock(version="2.0")
    (ws / "pixi.toml").write_text(
        (ws / "pixi.toml").read_text()
        + '\n[tool.lockship.image]\nonly = true\nprefix = "/srv/app"\n'
        'cmd = ["lsdemo-where"]\n'
        'annotations = { "org.opencontainers.image.source" = "https://example.invalid/app" }\n'
    )
    # relative folders, from the workspace's parent
    run = build(
        Path(ws.name),
        Path("out"),
        "--base",
        base_image,
        "--image-user",
        APP_USER,
        "--workdir",
        "/home/app",
        "--entrypoint",
        '["/bin/sh", "-c", "id -u; exec \\"$0\\" \\"$@\\""]',
        cache=Path("cache"),
        cwd=ws.parent,
    )
    image = ws.parent / built(run)
    assert [p.suffix for p in image.parent.glob("*.sh")] == []  # only = true: no installer
    config = config_of(image)
    inner = config["config"]
    assert inner["User"] == APP_USER and inner["WorkingDir"] == "/home/app"  # type: ignore[index]
    assert inner["Cmd"] == ["lsdemo-where"]  # type: ignore[index]
    assert config["created"] == "2023-11-14T22:13:20Z"
    (manifest,) = manifests(image)
    annotations = manifest["annotations"]
    assert annotations["org.opencontainers.image.version"] == "2.0"  # type: ignore[index]
    assert annotations["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"  # type: ignore[index]
    assert annotations["org.opencontainers.image.source"] == "https://example.invalid/app"  # type: ignore[index]
    podman.load(image)
    ran = podman.run("run", "--rm", "--net", "none", "lsdemo:2.0")
    assert ran.stdout.split() == ["1000", "prefix=/srv/app"]


def layer_digests(archive: Path) -> dict[str, int]:
    (manifest,) = manifests(archive)
    return {d["digest"]: d["size"] for d in manifest["layers"]}  # type: ignore[attr-defined]


def test_two_builds_on_different_paths_give_the_same_image(
    workspace: Workspace, base_image: Path, tmp_path: Path
) -> None:
    ws = workspace.lock()
    moved = tmp_path / "elsewhere" / "deeper" / "ws"
    shutil.copytree(ws, moved)
    first = built(build(ws, tmp_path / "a" / "out", "--image-only", "--base", base_image))
    second = built(
        build(
            moved,
            tmp_path / "b" / "x" / "out",
            "--image-only",
            "--base",
            base_image,
            cache=tmp_path / "other-cache",
        )
    )
    # again with the first build's cache: unpacked packages and every layer come from it
    cache = tmp_path / "a" / "cache"
    cached = LayerCache(cache / "image-layers").keys()
    third = built(
        build(ws, tmp_path / "c" / "out", "--image-only", "--base", base_image, cache=cache)
    )
    assert oci_index(first) == oci_index(second) == oci_index(third)
    assert (
        hashlib.sha256(first.read_bytes()).digest()
        == hashlib.sha256(second.read_bytes()).digest()
        == hashlib.sha256(third.read_bytes()).digest()
    )
    assert LayerCache(cache / "image-layers").keys() == cached
    assert len(cached) == len(layer_digests(first)) - 1  # all but the base's


def test_a_script_changing_a_package_file_leaves_the_build_cache_alone(
    tmp_path: Path, demo_channel: Path, base_image: Path
) -> None:
    # the environment is linked from the build cache's unpacked packages: an activate.d
    # script that appends to a package's file must not append to the cache's copy
    appending = {
        "name": "lsdemo-append",
        "version": "1.0",
        "files": {
            "etc/conda/activate.d/lsdemo-append.sh": (
                'echo appended >> "$CONDA_PREFIX/share/lsdemo-append/log.txt"\n'
            ),
            "share/lsdemo-append/log.txt": "original\n",
        },
    }
    made = Workspace(tmp_path / "w", demo_channel, appending)
    with made.server:
        ws = made.lock(wheel=False, specs=["lsdemo-append"])
        first = built(build(ws, tmp_path / "o1", "--image-only", "--base", base_image))
        second = built(build(ws, tmp_path / "o2", "--image-only", "--base", base_image))
    assert first.read_bytes() == second.read_bytes()
    (cached,) = (tmp_path / "cache" / "image-packages").glob("lsdemo-append-1.0-*/share")
    assert (cached / "lsdemo-append" / "log.txt").read_text() == "original\n"


def test_one_changed_package_changes_its_layer_and_the_top_one_only(
    tmp_path: Path, demo_channel: Path, base_image: Path
) -> None:
    made = Workspace(
        tmp_path / "w", demo_channel, ACTIVATION_PACKAGE, extra_package("1.0"), extra_package("1.1")
    )
    names = ["python", "lsdemo-hello", "lsdemo-config", "lsdemo-greet", "lsdemo-env"]
    with made.server:
        v1 = built(
            build(
                made.lock(version="1", specs=[*names, "lsdemo-data ==1.0"]),
                tmp_path / "o1",
                "--image-only",
                "--base",
                base_image,
            )
        )
        v2 = built(
            build(
                made.lock(version="2", specs=[*names, "lsdemo-data ==1.1"]),
                tmp_path / "o2",
                "--image-only",
                "--base",
                base_image,
            )
        )
    before, after = layer_digests(v1), layer_digests(v2)
    packages = len(names) + 1
    # the base's layer, one per package, the top one
    assert len(after) == len(before) == 1 + packages + 1
    changed = [d for d in after if d not in before]
    assert len(changed) == 2  # lsdemo-data's layer and the top layer (conda-meta, history)
    # v2 compressed only those two: the build cache holds v1's layers and those
    assert len(LayerCache(tmp_path / "cache" / "image-layers").keys()) == packages + 1 + 2
    (manifest,) = manifests(v2)
    history = config_of(v2)["history"]
    names = [h["created_by"] for h in history]  # type: ignore[attr-defined]
    layers = [d["digest"] for d in manifest["layers"]]  # type: ignore[attr-defined]
    assert {names[layers.index(d)] for d in changed} == {
        "lockship: lsdemo-data",
        "lockship: environment",
    }


def test_push_pull_and_run(
    workspace: Workspace, base_image: Path, podman: Podman, tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry") as registry:
        target = f"{registry.address}/team/lsdemo:1.2.3"
        run = build(
            workspace.lock(),
            tmp_path / "out",
            "--image-only",
            "--base",
            base_image,
            "--push",
            target,
        )
        image = built(run)
        first = _sent(run)
        assert first > 0
        again = build(
            workspace.lock(),
            tmp_path / "out2",
            "--image-only",
            "--base",
            base_image,
            "--push",
            target.replace(":1.2.3", ":again"),
        )
        assert _sent(again) == 0  # every blob is there already
        inspected = skopeo("inspect", "--tls-verify=false", f"docker://{target}")
        assert inspected.returncode == 0, inspected.stderr
        digest = oci_index(image)["manifests"][0]["digest"]  # type: ignore[index]
        assert json.loads(inspected.stdout)["Digest"] == digest
        pulled = tmp_path / "pulled"
        copied = skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{pulled}:x")
        assert copied.returncode == 0, copied.stderr
        podman.run("pull", "--tls-verify=false", f"docker://{target}")
        hello = podman.run("run", "--rm", "--net", "none", target, "lsdemo-hello")
        assert hello.stdout.strip() == "lsdemo-hello from /opt/lsdemo"


def _sent(run: Run) -> float:
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stderr.splitlines() if line.startswith("Pushed "))
    return float(line.split(": ")[1].split(" MB")[0])


def test_a_registry_asking_for_a_password(
    workspace: Workspace, base_image: Path, tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry", password="s3cret") as registry:
        target = f"{registry.address}/team/lsdemo:1"
        wrong = docker_config(tmp_path / "wrong.json", registry.address, "tester", "nope")
        out = tmp_path / "out"
        refused = build(
            workspace.lock(),
            out,
            "--image-only",
            "--base",
            base_image,
            "--push",
            target,
            "--registry-auth-file",
            wrong,
        )
        assert refused.returncode == 1
        assert len(refused.error_lines) == 1
        assert f"the registry {registry.address} refused" in refused.error_lines[0]
        assert not out.exists() or not list(out.glob("*.oci.tar"))
        right = docker_config(tmp_path / "right.json", registry.address, "tester", "s3cret")
        accepted = build(
            workspace.lock(),
            out,
            "--image-only",
            "--base",
            base_image,
            "--push",
            target,
            "--registry-auth-file",
            right,
        )
        built(accepted)
        inspected = skopeo(
            "inspect", "--tls-verify=false", "--creds", "tester:s3cret", f"docker://{target}"
        )
        assert inspected.returncode == 0, inspected.stderr


def test_an_unreachable_registry(workspace: Workspace, base_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = build(
        workspace.lock(),
        out,
        "--image-only",
        "--base",
        base_image,
        "--push",
        "127.0.0.1:9/team/app:1",
    )
    assert run.returncode == 1
    assert run.error_lines == [run.error_lines[0]] and run.error_lines[0].startswith(
        "ERROR: cannot reach the registry 127.0.0.1:9:"
    )
    assert not out.exists() or not list(out.iterdir())


def _refused(run: Run, out: Path) -> str:
    assert run.returncode == 1, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert not out.exists() or not list(out.iterdir())
    return run.error_lines[0]


def test_bases_that_cannot_carry_the_environment_are_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = workspace.lock(wheel=False)
    out = tmp_path / "out"
    other = debian_base(tmp_path / "arm" / "layout", python=False, config_arch="arm64")
    error = _refused(build(ws, out, "--image-only", "--base", other), out)
    assert f"is for linux/arm64, not {DEMO_PLATFORM} (linux/amd64)" in error
    no_glibc = debian_base(tmp_path / "busybox" / "layout", glibc=False, python=False)
    error = _refused(build(ws, out, "--image-only", "--base", no_glibc), out)
    assert "has no glibc (no libc.so.6)" in error
    error = _refused(build(ws, out, "--image-only", "--base", tmp_path / "missing.tar"), out)
    assert error.startswith(f"ERROR: the base image {tmp_path / 'missing.tar'} does not exist")
    strange = debian_base(tmp_path / "strange" / "layout", python=False)
    index = json.loads((strange / "index.json").read_text())
    manifest_path = strange / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads(manifest_path.read_text())
    manifest["layers"][0]["mediaType"] = "application/vnd.example.layer.v9+lz"
    data = json.dumps(manifest).encode()
    digest = hashlib.sha256(data).hexdigest()
    (strange / "blobs" / "sha256" / digest).write_bytes(data)
    index["manifests"][0].update(digest=f"sha256:{digest}", size=len(data))
    (strange / "index.json").write_text(json.dumps(index))
    error = _refused(build(ws, out, "--image-only", "--base", strange), out)
    assert "has a layer of unknown media type application/vnd.example.layer.v9+lz" in error


def test_a_glibc_older_than_the_environment_needs_is_refused(
    tmp_path: Path, demo_channel: Path, base_image: Path
) -> None:
    needy = {
        "name": "needs-new-glibc",
        "version": "1.0",
        "subdir": DEMO_PLATFORM,
        "depends": ["__glibc >=2.40"],
        "files": {"share/needy.txt": "x\n"},
    }
    made = Workspace(tmp_path / "w", demo_channel, needy)
    with made.server:
        ws = made.lock(wheel=False, glibc="2.40")
        pixi = ws / "pixi.lock"
        out = tmp_path / "out"
        assert "__glibc >=2.40" in pixi.read_text()
        error = _refused(build(ws, out, "--image-only", "--base", base_image), out)
    assert error.startswith("ERROR: the base image ")
    assert "has glibc 2.36, older than the 2.40 the environment needs" in error


def test_post_link_scripts_are_refused_not_skipped(
    tmp_path: Path, demo_channel: Path, base_image: Path
) -> None:
    scripted = {
        "name": "scripted",
        "version": "1.0",
        "files": {"bin/.scripted-post-link.sh": "#!/bin/sh\necho hi\n"},
    }
    made = Workspace(tmp_path / "w", demo_channel, scripted)
    with made.server:
        ws = made.lock(wheel=False)
        out = tmp_path / "out"
        error = _refused(build(ws, out, "--image-only", "--base", base_image), out)
        assert error.startswith("ERROR: scripted carry post-link scripts")
        assert "--no-link-scripts" in error
        built(build(ws, out, "--image-only", "--base", base_image, "--no-link-scripts"))


def multi_platform_build(tmp_path: Path, demo_channel: Path, *args: str | Path) -> Path:
    """``-p`` linux-64 and linux-aarch64 of a lock whose ``where`` prints its own prefix, on
    a base with both architectures; the image archive."""
    base = debian_base(tmp_path / "base" / "layout", arches=("amd64", "arm64"), python=False)
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    for subdir in (DEMO_PLATFORM, "linux-aarch64"):
        write_conda_package(
            channel,
            "where",
            "1.0",
            subdir=subdir,
            files={"bin/where": '#!/bin/sh\necho "where=/opt/placeholder/for/where"\n'},
            text_placeholders={"bin/where": "/opt/placeholder/for/where"},
        )
    index_channel(channel)
    with ChannelServer(channel) as server:
        records = {
            platform: channel_records(channel, server.url, platform, ["where", "lsdemo-config"])
            for platform in (DEMO_PLATFORM, "linux-aarch64")
        }
        ws = tmp_path / "ws"
        write_pixi_lock(ws / "pixi.lock", records, channel_url=server.url)
        (ws / "pixi.toml").write_text('[workspace]\nname = "multi"\nversion = "3"\n')
        out = tmp_path / "out"
        platforms = ("-p", DEMO_PLATFORM, "-p", "linux-aarch64")
        return built(build(ws, out, "--image-only", "--base", base, *platforms, *args))


def test_several_platforms_make_one_image_index(tmp_path: Path, demo_channel: Path) -> None:
    image = multi_platform_build(tmp_path, demo_channel)
    assert image.name == "multi-3.oci.tar"
    top = oci_index(image)["manifests"]
    assert [d["mediaType"] for d in top] == ["application/vnd.oci.image.index.v1+json"]  # type: ignore[index]
    found = manifests(image)
    assert len(found) == 2
    inspected = skopeo("inspect", "--raw", f"oci-archive:{image}")
    assert inspected.returncode == 0, inspected.stderr
    platforms = [m["platform"] for m in json.loads(inspected.stdout)["manifests"]]
    assert platforms == [
        {"os": "linux", "architecture": "amd64"},
        {"os": "linux", "architecture": "arm64", "variant": "v8"},
    ]
    podman = Podman(tmp_path / "podman")
    try:
        podman.load(image)
        ran = podman.run("run", "--rm", "--net", "none", "multi:3", "where")
    finally:
        podman.close()
    assert ran.stdout.strip() == "where=/opt/multi"


@functools.cache
def _emulates_arm64() -> str | None:
    """Why arm64 programs cannot run here, or None: qemu-aarch64 in binfmt_misc with the F
    flag (the interpreter opened at registration, so it works inside a container's root)."""
    if sys.platform != "linux":
        return f"binfmt_misc is Linux's, this is {sys.platform}"
    entry = load_script("rootfs").binfmt_entry()
    if entry is None or entry["enabled"] != "enabled":
        return "qemu-aarch64 is not enabled in binfmt_misc (python scripts/rootfs.py host)"
    if "F" not in entry.get("flags", ""):
        return "qemu-aarch64 in binfmt_misc lacks the F flag"
    return None


@pytest.mark.skipif(bool(_emulates_arm64()), reason=f"arm64 under emulation: {_emulates_arm64()}")
def test_the_arm64_image_pulled_from_a_registry_runs(tmp_path: Path, demo_channel: Path) -> None:
    """The linux-aarch64 half of a multi-platform image, pushed, pulled for linux/arm64 and run
    (every program emulated through binfmt_misc)."""
    with Registry(tmp_path / "registry") as registry:
        target = f"{registry.address}/team/multi:3"
        multi_platform_build(tmp_path, demo_channel, "--push", target)
        podman = Podman(tmp_path / "podman")
        try:
            podman.run("pull", "--tls-verify=false", "--platform", "linux/arm64", target)
            ran = podman.run(
                "run", "--rm", "--net", "none", target, "/bin/sh", "-c", "uname -m; where"
            )
            inspected = podman.run("image", "inspect", "--format", "{{.Architecture}}", target)
        finally:
            podman.close()
    assert inspected.stdout.strip() == "arm64"
    assert ran.stdout.split() == ["aarch64", "where=/opt/multi"], ran.stderr


def test_a_base_from_a_registry_is_recorded_by_digest(
    workspace: Workspace, base_image: Path, tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry") as registry:
        pushed = skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{base_image}",
            f"docker://{registry.address}/base/debian:12",
        )
        assert pushed.returncode == 0, pushed.stderr
        ws = workspace.lock()
        image = built(
            build(
                ws, tmp_path / "out", "--image-only", "--base", f"{registry.address}/base/debian:12"
            )
        )
        out = tmp_path / "out2"
        missing = build(ws, out, "--image-only", "--base", f"{registry.address}/base/debian:13")
    (manifest,) = manifests(image)
    annotations = manifest["annotations"]
    base_digest = annotations["org.opencontainers.image.base.digest"]  # type: ignore[index]
    index = json.loads((base_image / "index.json").read_text())
    assert base_digest == index["manifests"][0]["digest"]
    assert annotations["org.opencontainers.image.base.name"] == (  # type: ignore[index]
        f"{registry.address}/base/debian@{base_digest}"
    )
    local = built(build(ws, tmp_path / "local", "--image-only", "--base", base_image))
    assert layer_digests(local) == layer_digests(image)  # the same base, read either way
    error = _refused(missing, out)
    assert error.startswith(f"ERROR: the registry {registry.address} refused base/debian:13: 404")


def test_a_rejected_push_leaves_no_archive(
    workspace: Workspace, base_image: Path, tmp_path: Path
) -> None:
    with Registry(tmp_path / "registry", readonly=True) as registry:
        out = tmp_path / "out"
        target = f"{registry.address}/team/lsdemo:1"
        run = build(
            workspace.lock(), out, "--image", "--image-only", "--base", base_image, "--push", target
        )
    error = _refused(run, out)
    assert error.startswith(
        f"ERROR: the registry {registry.address} refused the push of {target}: 405"
    )
