"""User-facing errors: each carries a one-line message that names the file, flag or value at fault."""


class DetrError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""

    exit_code = 1


class ConfigError(DetrError):
    """An impossible configuration value, unknown profile or unknown key."""

    exit_code = 2


class DataError(DetrError):
    """A dataset that is missing, malformed or not COCO."""


class CheckpointError(DetrError):
    """A checkpoint that cannot be loaded into the requested model."""
