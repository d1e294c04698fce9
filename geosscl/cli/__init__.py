"""The ``geosscl`` command line: one small function per command, parsing and calling the library."""
