"""The one family of errors tinygpt raises for input it cannot use.

Every error here derives from `TinyGPTError`; the `tinygpt` command prints such an error as one
line and exits with status 2. Each also derives from the built-in error it refines (ValueError,
OSError, ...), so `except ValueError` goes on catching what it caught before. Anything that is
not a `TinyGPTError` (or an OSError from the system, or MemoryError) is a bug in tinygpt and
keeps its traceback."""


class TinyGPTError(Exception):
    """Base of every error tinygpt raises for bad input: a file, a config, an argument."""


class InputError(TinyGPTError, ValueError):
    """A value, shape, config or file content that tinygpt cannot use; the message names it."""


class InputTypeError(TinyGPTError, TypeError):
    """An argument of the wrong kind (an integer tensor where an op needs floating point, ...)."""


class InputIndexError(TinyGPTError, IndexError):
    """An index or token id outside the range it must lie in (a token id past the vocabulary, ...)."""


class InputKeyError(TinyGPTError, KeyError):
    """A name that is not known (a model size, a config key); printed as its message, unquoted."""

    __str__ = Exception.__str__


class CheckpointError(InputError):
    """A checkpoint that is truncated, corrupt, foreign, or does not fit the model asked for."""


class TrainingError(TinyGPTError, RuntimeError):
    """Training cannot go on (a non-finite loss, ...); the last good checkpoint is kept."""


class MissingFileError(TinyGPTError, FileNotFoundError):
    """A file or folder the user named that does not exist; the message names it and its role."""


class ServiceError(TinyGPTError, ConnectionError):
    """A service tinygpt was asked to use (a local Ollama server, ...) cannot be reached."""


class MissingDependencyError(TinyGPTError, ImportError):
    """An optional library a feature needs is not installed; the message says what to install."""


class StateError(TinyGPTError, RuntimeError):
    """A call the object's state does not allow: backward twice through a freed graph, backward
    on a tensor that needs no gradient, requires_grad_ on a non-leaf, ..."""
