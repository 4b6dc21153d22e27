"""Locked PyPI packages: wheels downloaded and checked (``wheels``), sources built into wheels
(``sdist``, ``git``), and which wheel fits which target (``tags``)."""
