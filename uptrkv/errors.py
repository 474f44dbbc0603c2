"""Exceptions of uptrkv.  A leaf module: every layer raises these.

Failures of libbpf calls are :class:`uptrkv._libbpf.LibbpfError`, an
``OSError`` carrying errno; everything here is about the store's own rules.
"""


class UptrkvError(Exception):
    """Base class of uptrkv's own errors."""


class UnsupportedKernelError(UptrkvError):
    """The running kernel or the process's privileges cannot host a store."""


class LayoutError(UptrkvError):
    """A BPF object's BTF does not describe the layout this package implements."""


class StoreFullError(UptrkvError):
    """No room for a value even with every data page added; nothing was changed."""


class StoreClosedError(UptrkvError):
    """The store was closed; create a new one."""


class InvalidKeyError(UptrkvError, ValueError):
    """A key outside 0..KV_MAX_KEYS-1 (a key that is not an int is a TypeError)."""


class InvalidValueError(UptrkvError, ValueError):
    """A value whose size the store cannot hold or that does not match the key."""


class MissingKeyError(UptrkvError, KeyError):
    """The key holds no value."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "missing key"


class KeyHeldError(UptrkvError):
    """A loaded program resolved the key's place at load (a known key): it cannot move or go.

    Roll out a new version instead, or close the object that holds it.
    """


class ManifestError(UptrkvError):
    """A manifest that cannot be used: the message names the file and key."""


class RolloutError(UptrkvError):
    """A rollout step failed; the message says which version is attached and what the store holds."""


class CorruptStoreError(UptrkvError, ValueError):
    """The metadata page holds an entry this store did not write or cannot use.

    ``key`` and ``entry`` name the first bad entry (``entry`` is the raw
    32-bit word), ``problems`` lists every inconsistency found, one sentence
    each.  The store can still be closed.
    """

    def __init__(self, message: str, key: int | None = None, entry: int | None = None,
                 problems: list[str] | None = None):
        super().__init__(message)
        self.key = key
        self.entry = entry
        self.problems = problems if problems is not None else [message]


class StoreOwnerError(UptrkvError):
    """This process did not create the store (a fork child): it may not change or read it."""


class StoreAccessError(UptrkvError, PermissionError):
    """A named store's files are not private to this user (owner or mode): refused."""


class StoreBusyError(UptrkvError):
    """Another process is the named store's writer (one at a time)."""


class StoreStateError(UptrkvError):
    """A named store's state file is missing, unreadable or does not match its map or target."""


class TargetGoneError(UptrkvError, ProcessLookupError):
    """The store's target task exited (or its pid now names another task); `uptrkv gc` removes it."""


class MapGoneError(StoreStateError):
    """The store's map no longer exists (its pin removed and no program holds it): its
    element, and the pages' registration, went with it."""
