"""The ``offramp`` command line: thin commands over the library."""
