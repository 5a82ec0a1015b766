"""detrdoctor: the command-line tool and the diagnostics around the `detr` library."""

__version__ = "0.1.0"
