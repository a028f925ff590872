"""Errors a person at the vehicle can act on: each says what was wrong, where, and what to do."""


class DeeadError(Exception):
    """Base of every error deead_ros raises on purpose."""


class ConfigError(DeeadError):
    """A parameter or parameter combination is invalid."""


class ModelFileError(DeeadError):
    """A model, manifest or engine file is missing, truncated or does not match its manifest."""


class BackendUnavailableError(DeeadError):
    """The requested backend cannot run on this machine (library or device missing)."""


class EngineBuildError(DeeadError):
    """Building an engine failed."""


class BadInputError(DeeadError):
    """A message cannot be used (wrong encoding, corrupt data, NaN, unknown frame); the frame is dropped."""

    drop_reason = "bad_input"      # the counter the node's diagnostics add the dropped frame to


class CameraMismatchError(BadInputError):
    """A camera of another aspect than the model's, refused (camera_mismatch: refuse)."""

    drop_reason = "camera_mismatch"
