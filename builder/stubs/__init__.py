"""The installer program ("stub"): where a build finds one (``lookup``), what one is (``facts``:
sidecar and cache key), and how one is made (``freeze``, ``pack``, ``elf``, ``tools``,
``native/``). Every file here and in ``stub/`` decides the stub cache key."""
