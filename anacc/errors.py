"""Error types a user can cause; the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class AnaccError(Exception):
    """Base class of every error caused by user input (files, options, data)."""


class ModelError(AnaccError):
    """The ONNX model cannot be read or is not supported."""


class UnsupportedOpError(ModelError):
    """The model uses operations anacc cannot compile."""


class ChipError(AnaccError):
    """A chip description file is missing, malformed or inconsistent."""


class ProgramError(AnaccError):
    """A program file is corrupt, tampered with or from an incompatible version."""


class DataError(AnaccError):
    """Input data does not match the model (names, shapes, dtypes, ranges)."""


class OptionError(AnaccError):
    """A command-line or API option has an invalid value."""
