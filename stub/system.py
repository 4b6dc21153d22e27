"""What the running machine offers: virtual packages (glibc, macOS, CUDA ...) checked up front."""

from __future__ import annotations

from collections.abc import Sequence

from lockship.stub.errors import InstallError
from rattler import MatchSpec, Version, VersionSpec, VirtualPackage, VirtualPackageOverrides

OVERRIDE_HINTS = {
    "__glibc": "CONDA_OVERRIDE_GLIBC",
    "__osx": "CONDA_OVERRIDE_OSX",
    "__cuda": "CONDA_OVERRIDE_CUDA",
}


class SystemRequirementError(InstallError):
    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        variables = ", ".join(sorted(set(OVERRIDE_HINTS.values())))
        super().__init__(
            "this machine does not meet the environment's requirements: "
            + "; ".join(problems)
            + f" (if you know better, set {variables} to override the detected values)"
        )


def detect_virtual_packages() -> dict[str, str]:
    """name -> version of the virtual packages rattler detects (honouring CONDA_OVERRIDE_*)."""
    detected = {}
    for package in VirtualPackage.detect(VirtualPackageOverrides.from_env()):
        generic = package.into_generic()
        detected[generic.name.normalized] = str(generic.version)
    return detected


def check_virtual_packages(
    requirements: Sequence[str], detected: dict[str, str] | None = None
) -> None:
    """Raise naming every requirement (``__glibc >=2.28``) the machine does not satisfy."""
    if not requirements:
        return  # detecting runs programs (nvidia-smi): only when something depends on it
    machine = detect_virtual_packages() if detected is None else detected
    problems = []
    for requirement in requirements:
        spec = MatchSpec(requirement)
        name = spec.name.normalized
        have = machine.get(name)
        if have is None:
            problems.append(f"{requirement} is required but this machine has no {name}")
            continue
        if spec.version is not None and not VersionSpec(str(spec.version)).matches(Version(have)):
            hint = OVERRIDE_HINTS.get(name)
            problems.append(
                f"{requirement} is required but this machine has {name} {have}"
                + (f" ({hint})" if hint else "")
            )
    if problems:
        raise SystemRequirementError(problems)
