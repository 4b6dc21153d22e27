"""A container engine, a registry and base images for the image tests, all on this machine.

* :func:`debian_base`: an OCI layout made from Debian's own ``.deb`` files (``apt-get
  download``, cached in ``~/.cache/lockship/debs``), unpacked into one root, one layer: glibc
  (``libc6``), ``libgcc-s1``, ``libstdc++6``, busybox (a shell, as distroless's debug images
  have) and, for the python stand-in, Debian's ``python3.11-minimal``. Never a public registry.
* :class:`Podman`: podman with its own storage and settings that work on this machine (runc,
  vfs, cgroupfs, no ulimits; see the design notes).
* :class:`Docker`: Debian's Docker Engine (``docker.io``, 20.10) with its own data, state and
  socket, and no network set-up, for ``docker load``.
* :class:`Registry`: Debian's ``docker-registry`` on 127.0.0.1 with its own config, optionally
  asking for a password.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import IO

TOOLS = ("podman", "runc", "skopeo", "docker-registry", "apt-get", "dpkg-deb")
BASE_PACKAGES = ("libc6", "libgcc-s1", "libstdc++6", "busybox-static")
PYTHON_PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libexpat1", "zlib1g")
DEB_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lockship" / "debs"
#: the user a non-root container runs as (listed in the base's /etc/passwd)
APP_USER = "1000:1000"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def debs(packages: tuple[str, ...], arch: str = "amd64") -> list[Path]:
    """The ``.deb`` files of ``packages`` for ``arch``, downloaded once into the cache.

    Another architecture's package lists are kept in the cache too (apt's own options), so
    the machine's dpkg and apt configuration are left alone."""
    folder = DEB_CACHE / arch
    folder.mkdir(parents=True, exist_ok=True)
    options: list[str] = []
    if arch != _host_arch():
        state = DEB_CACHE / f"apt-{arch}"
        for sub in ("lists/partial", "cache/archives/partial"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        options = [
            *("-o", f"APT::Architecture={arch}"),
            *("-o", f"APT::Architectures::={arch}"),
            *("-o", f"Dir::State::Lists={state / 'lists'}"),
            *("-o", f"Dir::Cache={state / 'cache'}"),
            *("-o", "Dir::State::status=/dev/null"),
        ]
    missing = [f"{p}:{arch}" for p in packages if not _cached(folder, p, arch)]
    if missing:
        if options and not any((DEB_CACHE / f"apt-{arch}" / "lists").glob("*Packages*")):
            subprocess.run(["apt-get", *options, "update"], check=True, capture_output=True)
        subprocess.run(
            ["apt-get", *options, "download", *missing],
            cwd=folder,
            check=True,
            capture_output=True,
        )
    found = [_cached(folder, p, arch) for p in packages]
    missed = [p for p, f in zip(packages, found, strict=True) if f is None]
    assert not missed, f"apt-get download left out {missed} ({arch})"
    return [f for f in found if f is not None]


def _host_arch() -> str:
    done = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True)
    return done.stdout.strip()


def _cached(folder: Path, package: str, arch: str) -> Path | None:
    found = sorted(folder.glob(f"{package.replace('+', '?')}_*_{arch}.deb"))
    return found[-1] if found else None


def _tar_bytes(root: Path) -> bytes:
    """``root`` as a tar with sorted names, root-owned, mtime 0."""
    buffer = BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buffer.getvalue()


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def debian_base(
    layout: Path,
    *,
    arches: tuple[str, ...] = ("amd64",),
    glibc: bool = True,
    python: bool = True,
    config_arch: str | None = None,
) -> Path:
    """Write an OCI layout of a small Debian root (see the module's docstring) to ``layout``:
    one image, or with several ``arches`` an index of one image per architecture."""
    manifests = []
    for arch in arches:
        manifest = _debian_image(layout, arch, glibc, python, config_arch)
        if len(arches) > 1:
            variant = {"variant": "v8"} if arch == "arm64" else {}
            manifest["platform"] = {"os": "linux", "architecture": arch, **variant}
        manifests.append(manifest)
    index = {"schemaVersion": 2, "manifests": manifests}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return layout


def _debian_image(
    layout: Path, arch: str, glibc: bool, python: bool, config_arch: str | None
) -> dict[str, object]:
    packages = BASE_PACKAGES if glibc else ("busybox-static",)
    packages += PYTHON_PACKAGES if python and arch == "amd64" else ()
    root = layout.parent / f"{layout.name}-root-{arch}"
    root.mkdir(parents=True)
    for deb in debs(packages, arch):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for name in ("usr/share/doc", "usr/share/man", "usr/share/lintian"):
        shutil.rmtree(root / name, ignore_errors=True)
    for folder in ("bin", "usr/bin", "tmp", "etc", "home/app"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "home/app").chmod(0o777)
    for applet in ("sh", "env", "ls", "cat", "id", "echo"):
        target = root / "bin" / applet
        if not target.exists():
            target.symlink_to("busybox")
    if not (root / "usr/bin/env").exists():
        (root / "usr/bin/env").symlink_to("/bin/busybox")
    if (root / "usr/bin/python3.11").exists():
        (root / "usr/bin/python3").symlink_to("python3.11")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    tar = _tar_bytes(root)
    layer = gzip.compress(tar, mtime=0)
    layer_blob = _blob(layout, layer)
    config = {
        "architecture": config_arch or arch,
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests: debian root"}],
    }
    config_blob = _blob(layout, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_blob},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_blob}],
    }
    manifest_blob = _blob(layout, json.dumps(manifest).encode())
    shutil.rmtree(root)
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest_blob}


@dataclass
class Podman:
    """podman with its own storage under ``home``."""

    home: Path

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.conf = self.home / "containers.conf"
        # podman refuses a runroot path longer than 50 characters
        self.runroot = Path(tempfile.mkdtemp(prefix="lsp-"))
        self.conf.write_text("[containers]\ndefault_ulimits = []\n")

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        command = [
            "podman",
            "--root",
            str(self.home / "root"),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--runtime",
            "runc",
            *args,
        ]
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {done.stderr}")
        return done

    def load(self, archive: Path) -> str:
        """Load an OCI archive; what podman says it loaded (``Loaded image: NAME``)."""
        done = self.run("load", "-i", str(archive))
        return done.stdout.strip().rsplit(": ", 1)[-1]

    def close(self) -> None:
        """Remove the containers' run-time folder (outside ``home``)."""
        shutil.rmtree(self.runroot, ignore_errors=True)


class Docker:
    """A Docker Engine of its own: ``dockerd`` (with the containerd it starts) keeping its
    images under ``home``, its socket and state in a short temporary folder, no bridge and no
    iptables rules; the client's settings under ``home`` too. :meth:`close` stops it."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        # a unix socket's path must stay short
        self.state = Path(tempfile.mkdtemp(prefix="lsd-"))
        self.env = {
            **os.environ,
            "DOCKER_HOST": f"unix://{self.state}/docker.sock",
            "DOCKER_CONFIG": str(home / "config"),
        }
        self.log = home / "dockerd.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    "dockerd",
                    "--data-root",
                    str(home / "data"),
                    "--exec-root",
                    str(self.state / "exec"),
                    "--pidfile",
                    str(self.state / "dockerd.pid"),
                    "--host",
                    self.env["DOCKER_HOST"],
                    "--storage-driver",
                    "vfs",
                    "--bridge=none",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--ip-masq=false",
                    "--userland-proxy=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + 60
        while self.run("version", check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"dockerd did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    def run(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)} failed: {done.stderr}")
        return done

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.state, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """Debian's docker-registry on 127.0.0.1:PORT, storing under ``folder``; with ``password``
    it asks for user ``tester`` and that password (htpasswd, bcrypt); ``readonly`` refuses
    every push (its maintenance mode)."""

    def __init__(self, folder: Path, password: str | None = None, readonly: bool = False) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        auth = ""
        if password is not None:
            hashed = subprocess.run(
                [
                    "python3",
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt, sys; print(crypt.crypt(sys.argv[1], "
                    "crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                    password,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            (folder / "htpasswd").write_text(f"tester:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: tests\n    path: {folder / 'htpasswd'}\n"
        (folder / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {folder / 'storage'}\n"
            + ("  maintenance:\n    readonly:\n      enabled: true\n" if readonly else "")
            + f"http:\n  addr: 127.0.0.1:{self.port}\n{auth}"
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Registry:
        self.log = open(self.folder / "registry.log", "wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(self.folder / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 401: up, asking for a password
            except OSError:
                assert self.process.poll() is None, (self.folder / "registry.log").read_text()
                assert time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.log is not None:
            self.log.close()


def docker_config(path: Path, registry: str, user: str, password: str) -> Path:
    """A docker ``config.json`` holding credentials for ``registry``."""
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    return path


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)


def oci_index(archive: Path) -> dict[str, object]:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return dict(json.load(member))


def iter_blobs(archive: Path) -> Iterator[tuple[str, int]]:
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.name.startswith("blobs/sha256/") and member.isfile():
                yield member.name.rsplit("/", 1)[-1], member.size
