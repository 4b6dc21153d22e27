"""What the build reads: every input kind (``pixi.lock``, ``conda-lock.yml``, ``@EXPLICIT``
files, ``environment.yml`` and ``--spec``) as a :class:`~lockship.builder.inputs.model.Source`
(``reader.open_input`` detects the kind)."""
