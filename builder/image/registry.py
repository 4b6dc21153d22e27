"""Talking to a registry over the distribution API with oras-py (``oras.provider.Registry``):
reading a base image, pushing an image layout.

oras-py serves as it is for the transport, both auth schemes (Basic, and Bearer tokens from
the registry's token service) and pushing a layout with an index
(``oras.layout.Layout.push_to_registry``, byte for byte, each blob only if the registry lacks
it). Around it this module adds what lockship needs: credentials read from the usual files
(podman's ``auth.json``, docker's ``config.json``, ``--registry-auth-file``), plain HTTP for a
registry on this machine only (as docker and podman allow), one reachability check that fails
at once rather than after oras's retries, and the bytes a push sent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockship.builder.image.oci import INDEX_TYPES, MANIFEST_TYPES, ImageError

if TYPE_CHECKING:
    import oras.provider

#: hosts reached over plain HTTP (a registry on this machine), as docker and podman do
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
PING_TIMEOUT = 10


@dataclass(frozen=True)
class Reference:
    """``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str, *, also: str = "") -> Reference:
        """``text`` as a reference; the error names what else it could have been (``also``)."""
        rest, _, digest = text.partition("@")
        first, slash, remainder = rest.partition("/")
        if not slash or not ("." in first or ":" in first or first == "localhost"):
            raise ImageError(
                f"{text!r} is not a registry reference (REGISTRY/REPOSITORY[:TAG][@DIGEST], "
                f"e.g. registry.example:5000/team/app:1.0){also}"
            )
        repository, colon, tag = remainder.rpartition(":")
        if not colon or "/" in tag:
            repository, tag = remainder, ""
        if not repository:
            raise ImageError(f"{text!r} names no repository")
        return cls(first, repository, tag or None, digest or None)

    @property
    def host(self) -> str:
        return self.registry.rsplit(":", 1)[0] if self.registry.count(":") == 1 else self.registry

    @property
    def plain_http(self) -> bool:
        return self.host in LOOPBACK

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        text += f":{self.tag}" if self.tag else ""
        return text + (f"@{self.digest}" if self.digest else "")


def auth_files(explicit: Path | None, environ: Mapping[str, str]) -> list[Path]:
    """The credential files to read, first found first: ``explicit``, ``$REGISTRY_AUTH_FILE``,
    podman's ``auth.json`` files, docker's ``config.json``."""
    if explicit is not None:
        if not explicit.is_file():
            raise ImageError(f"the registry auth file {explicit} does not exist")
        return [explicit]
    home = Path(environ.get("HOME") or Path.home())
    candidates = [
        environ.get("REGISTRY_AUTH_FILE"),
        environ.get("XDG_RUNTIME_DIR") and f"{environ['XDG_RUNTIME_DIR']}/containers/auth.json",
        str(home / ".config" / "containers" / "auth.json"),
        f"{environ.get('DOCKER_CONFIG') or home / '.docker'}/config.json",
    ]
    return [Path(c) for c in candidates if c and Path(c).is_file()]


@contextmanager
def _quiet_oras() -> Iterator[None]:
    """oras logs its retries and errors itself; lockship reports them as one line."""
    logger = logging.getLogger("oras")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class RegistryClient:
    """One registry repository, authenticated from ``auth`` files."""

    def __init__(self, reference: Reference, auth: Sequence[Path]) -> None:
        import oras.provider
        import requests

        self.reference = reference
        scheme = "http" if reference.plain_http else "https"
        self.base = f"{scheme}://{reference.registry}/v2/"
        try:
            ping = requests.get(self.base, timeout=PING_TIMEOUT)
        except requests.RequestException as e:
            raise ImageError(f"cannot reach the registry {reference.registry}: {_cause(e)}") from e
        challenge = ping.headers.get("Www-Authenticate", "")
        backend = "basic" if challenge.lower().startswith("basic") else "token"
        self.registry: oras.provider.Registry = oras.provider.Registry(
            reference.registry, insecure=reference.plain_http, auth_backend=backend
        )
        self.container = self.registry.get_container(f"{reference.registry}/{reference.repository}")
        # oras reads docker's config.json by itself; podman's auth.json has the same "auths"
        self.registry.auth.load_configs(self.container, configs=[str(p) for p in auth])

    def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        import requests

        try:
            with _quiet_oras():
                return self.registry.do_request(url, method, **kwargs)
        except requests.RequestException as e:
            raise ImageError(f"the registry {self.reference.registry} failed: {_cause(e)}") from e
        except ValueError as e:  # oras: "Cannot respond to request for authentication."
            raise ImageError(
                f"the registry {self.reference.registry} refused the credentials for "
                f"{self.reference.repository} ({e}); log in with podman login or docker login, "
                "or pass --registry-auth-file"
            ) from e

    def _check(self, response: Any, what: str) -> None:
        if response.status_code in (401, 403):
            raise ImageError(
                f"the registry {self.reference.registry} refused {what} "
                f"({response.status_code}); log in with podman login or docker login, or pass "
                "--registry-auth-file"
            )
        if response.status_code >= 300:
            detail = response.text.strip().replace("\n", " ")[:200]
            raise ImageError(
                f"the registry {self.reference.registry} refused {what}: "
                f"{response.status_code} {detail}"
            )

    def manifest(self, reference: str) -> tuple[str, bytes]:
        """The manifest or index ``reference`` (a tag or digest): its media type and bytes."""
        url = f"{self.base}{self.reference.repository}/manifests/{reference}"
        accept = ", ".join((*INDEX_TYPES, *MANIFEST_TYPES))
        response = self._request("GET", url, headers={"Accept": accept})
        self._check(response, f"{self.reference.repository}:{reference}")
        data: bytes = response.content
        if reference.startswith("sha256:"):
            _verify(data, reference)
        return str(response.headers.get("Content-Type", "")).split(";")[0], data

    def blob(self, digest: str, target: Path) -> None:
        """Download the blob ``digest`` into ``target``, verified."""
        url = f"{self.base}{self.reference.repository}/blobs/{digest}"
        response = self._request("GET", url, stream=True)
        self._check(response, f"the blob {digest}")
        hasher = hashlib.sha256()
        with open(target, "wb") as f:
            for chunk in response.iter_content(chunk_size=1 << 20):
                hasher.update(chunk)
                f.write(chunk)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise ImageError(f"the registry sent a blob that does not match {digest}")

    def authenticate(self) -> None:
        """Check the credentials now, so a refusal is said as one (oras would say it later,
        as a failed upload)."""
        response = self._request("GET", self.base)
        self._check(response, "the credentials")

    def push_layout(self, layout: Path, tag: str) -> int:
        """Push the layout's image under ``tag``; return the bytes of the blobs sent (those
        the registry lacked)."""
        import oras.layout

        self.authenticate()
        sent = _SentCounter(self.registry)
        target = f"{self.reference.registry}/{self.reference.repository}:{tag}"
        try:
            with _quiet_oras(), sent:
                response = oras.layout.Layout(str(layout)).push_to_registry(
                    self.registry, target, tag=tag
                )
        except ImageError:
            raise
        except Exception as e:  # oras raises ValueError and requests' errors
            if any(code in str(e) for code in ("UNAUTHORIZED", "DENIED")):
                raise ImageError(
                    f"the registry {self.reference.registry} refused the push of {target}; "
                    "log in with podman login or docker login, or pass --registry-auth-file"
                ) from e
            # oras's own message may be a JSON decoding error: ask the registry what it says
            probe = self._request("POST", f"{self.base}{self.reference.repository}/blobs/uploads/")
            self._check(probe, f"the push of {target}")
            raise ImageError(f"pushing to {target} failed: {_cause(e)}") from e
        self._check(response, f"the push of {target}")
        return sent.bytes


class _SentCounter:
    """Counts the bytes of the blobs oras uploads (it skips those the registry has)."""

    def __init__(self, registry: oras.provider.Registry) -> None:
        self.registry, self.bytes = registry, 0

    def __enter__(self) -> _SentCounter:
        original = self.registry.put_upload

        def counting(blob: str, container: Any, layer: dict[str, Any]) -> Any:
            self.bytes += int(layer["size"])
            return original(blob, container, layer)

        self.registry.put_upload = counting
        return self

    def __exit__(self, *exc: object) -> None:
        del self.registry.put_upload


def _verify(data: bytes, digest: str) -> None:
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise ImageError(f"the registry sent a manifest that does not match {digest}")


def _cause(error: BaseException) -> str:
    text = str(error).replace("\n", " ")
    inner = error.__context__ or error.__cause__
    while inner is not None and "Connection refused" not in text:
        text = str(inner).replace("\n", " ") if "refused" in str(inner) else text
        inner = inner.__context__ or inner.__cause__
    return text[:300]
