"""The one exception family a user can cause. Its message is a single sentence meant for people."""


def first_line(exc: BaseException, width: int = 300) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line reports."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:width]


class DasAgError(Exception):
    """Something the user can fix: the message says what was wrong and what to do."""


class ConfigError(DasAgError, ValueError):
    """A setting is out of range, of the wrong kind, or contradicts another."""


class WeightsError(DasAgError):
    """Model weights are missing, corrupt, of the wrong shape, or could not be downloaded."""


class DeviceError(DasAgError):
    """The requested device or precision is not available here."""


class WriteError(DasAgError, OSError):
    """A file could not be written: a full disk, a read-only or missing folder, no permission."""

    def __init__(self, path, exc: OSError | str):
        self.path = path
        self.reason = exc if isinstance(exc, str) else exc.strerror or first_line(exc)
        super().__init__(f"could not write {path}: {self.reason}")
