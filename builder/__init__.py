"""The lockship builder: lockfile -> verified packages -> payload -> one-file installer."""

from lockship.stub import __version__

__all__ = ["__version__"]
