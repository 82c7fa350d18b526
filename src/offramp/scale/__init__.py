"""Batch work at any size: predictions streamed through one machine's cores (more engines can plug
in behind :func:`offramp.scale.stream.predict_files`' seam)."""
