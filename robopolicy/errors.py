"""Error types the command line reports as exit code 2, kept free of heavy imports so the CLI starts fast."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or of an unknown format; the message names the file and field."""
