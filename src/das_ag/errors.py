"""The one exception family a user can cause. Its message is a single sentence meant for people."""


class DasAgError(Exception):
    """Something the user can fix: the message says what was wrong and what to do."""


class ConfigError(DasAgError, ValueError):
    """A setting is out of range, of the wrong kind, or contradicts another."""


class WeightsError(DasAgError):
    """Model weights are missing, corrupt, of the wrong shape, or could not be downloaded."""


class DeviceError(DasAgError):
    """The requested device or precision is not available here."""
