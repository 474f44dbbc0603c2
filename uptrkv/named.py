"""Named stores on disk: the runtime root, a store's directory, its state file and its lock.

A named store is a directory ``ROOT/NAME`` (ROOT: ``$UPTRKV_ROOT`` or
``/run/uptrkv``, on tmpfs) holding the page files (see :mod:`.backing`),
``state.json`` and ``lock``.  The state file says what the pages belong to:
a format version, the layout identity, the map's pin, the target task (pid
and start time, so that a reused pid is told apart) and the manifest in
force.  It is replaced atomically (write a temporary file, rename).

One writer at a time: a writer holds ``flock(LOCK_EX)`` on ``lock`` for as
long as its store is open; readers take no lock.  A writer that dies loses
its lock with its file descriptors, so the next one gets in at once.

Access: directories are 0700 and files 0600, owned by the creating user
(root).  Opening refuses anything a third user could have changed.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import threading
from dataclasses import dataclass

from . import _killpoints as _kp
from .errors import StoreAccessError, StoreBusyError, StoreStateError

ROOT_ENV = "UPTRKV_ROOT"
DEFAULT_ROOT = "/run/uptrkv"
FALLBACK_ROOT = "/dev/shm/uptrkv"     # where /run is not tmpfs (some containers)
FORMAT = 1
STATE = "state.json"
LOCK = "lock"
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# Every file a store directory may hold: remove() deletes these and nothing else.
STORE_FILE_RE = re.compile(r"(meta|page[0-9]|state\.json|lock|wal|newpin|\.state\.json\.[0-9]+)")
NEW_PIN = "newpin"      # a map pin create() is making, until its state file records it


def runtime_root(root: str | os.PathLike | None = None) -> str:
    """root, else $UPTRKV_ROOT, else /run/uptrkv if /run is tmpfs, else /dev/shm/uptrkv."""
    if root is not None:
        return os.fspath(root)
    if ROOT_ENV in os.environ:
        return os.environ[ROOT_ENV]
    from .backing import is_tmpfs
    try:
        return DEFAULT_ROOT if is_tmpfs(os.path.dirname(DEFAULT_ROOT)) else FALLBACK_ROOT
    except OSError:
        return FALLBACK_ROOT


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ValueError(f"store name {name!r} is not valid: use 1-64 letters, digits, '_', '.' "
                         "or '-', not starting with '.' or '-'")
    return name


def task_start_time(pid: int) -> int | None:
    """The task's start time in clock ticks since boot (/proc/PID/stat field 22), or None
    if no such task exists.  A pid that is reused gets another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])


def _check_secure(path: str, st: os.stat_result, kind: str) -> None:
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StoreAccessError(
            f"{path} is owned by uid {st.st_uid}, not by this user ({uid}): refusing a {kind} "
            "someone else controls")
    if st.st_mode & 0o022:
        raise StoreAccessError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            f"refusing a {kind} a third user could change; chmod go-w it if that is intended")
    if st.st_mode & 0o077 and kind == "store directory":
        raise StoreAccessError(
            f"{path} is open to group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "store directories are 0700")


@dataclass
class Target:
    """The task whose BPF programs use the store."""

    pid: int
    start_time: int
    tid: int | None = None

    def alive(self) -> bool:
        """True while the same task runs (not a later task that got its pid)."""
        return task_start_time(self.tid or self.pid) == self.start_time


class StoreDir:
    """The directory of one named store."""

    def __init__(self, name: str, root: str | os.PathLike | None = None):
        self.name = check_name(name)
        self.root = runtime_root(root)
        self.path = os.path.join(self.root, name)
        self._lock_fd = -1

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    # --- creation and checks ----------------------------------------------------

    def make(self) -> None:
        """Create the directory (0700); FileExistsError names the store."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        _check_secure(self.root, os.stat(self.root), "runtime root")
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, f"store {self.name!r} already exists in {self.root}; "
                                  "open it, or destroy it first") from None
        os.chmod(self.path, 0o700)           # whatever the umask

    def check_root(self) -> None:
        """StoreAccessError unless the runtime root is a tmpfs directory this user owns that
        nobody else can write: the only place whose directories gc and destroy delete."""
        from .backing import require_tmpfs
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"runtime root {self.root} does not exist") from None
        if not stat.S_ISDIR(st.st_mode):
            raise StoreAccessError(f"runtime root {self.root} is not a directory")
        _check_secure(self.root, st, "runtime root")
        try:
            require_tmpfs(self.root)
        except OSError as exc:
            raise StoreAccessError(f"{exc.strerror}: not a runtime root") from None

    def check(self) -> None:
        """StoreAccessError unless the root, directory and files are this user's and private."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no store {self.name!r} in {self.root}") from None
        except PermissionError:
            raise StoreAccessError(f"permission denied: store {self.name!r} in {self.root} belongs "
                                   "to another user (root); run as that user") from None
        _check_secure(self.root, os.stat(self.root), "runtime root")
        if not stat.S_ISDIR(st.st_mode):
            raise StoreAccessError(f"{self.path} is not a directory")
        _check_secure(self.path, st, "store directory")
        try:
            entries = list(os.scandir(self.path))
        except PermissionError:
            raise StoreAccessError(f"permission denied: cannot read {self.path}; "
                                   "named stores belong to the user that created them") from None
        for entry in entries:
            if entry.is_symlink():              # before its mode: a symlink's is always 0777
                raise StoreAccessError(f"{entry.path} is a symbolic link; store files are plain files")
            _check_secure(entry.path, entry.stat(follow_symlinks=False), "store file")

    # --- state ----------------------------------------------------------------------

    def read_state(self) -> dict:
        path = self.file(STATE)
        try:
            with open(path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            raise StoreStateError(f"store {self.name!r} has no {STATE}: its creator died before "
                                  f"finishing; `uptrkv gc` removes it") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreStateError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise StoreStateError(f"{path} has format {state.get('format') if isinstance(state, dict) else '?'}; "
                                  f"this uptrkv reads format {FORMAT}")
        _check_schema(path, state)
        return state

    def write_state(self, state: dict) -> None:
        """Replace the state file atomically (a reader sees the old or the new one)."""
        state = dict(state, format=FORMAT)
        tmp = self.file(f".{STATE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, json.dumps(state, indent=1, sort_keys=True).encode() + b"\n")
        finally:
            os.close(fd)
        if _kp.ARMED:
            _kp.reached("state.written")
        os.rename(tmp, self.file(STATE))

    # --- the writer lock ------------------------------------------------------------

    def lock(self, wait: bool = False) -> None:
        """Become the store's one writer; StoreBusyError if another process is (unless wait)."""
        fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreBusyError(f"store {self.name!r} is open for writing by process {holder}; "
                                 "one writer at a time: close it there, or open read-only") from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    @property
    def locked(self) -> bool:
        return self._lock_fd >= 0

    def unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def remove_stale_temporaries(self) -> None:
        """Temporary state files a killed writer left (the writer lock is ours)."""
        for entry in os.scandir(self.path):
            if entry.name.startswith(f".{STATE}."):
                os.unlink(entry.path)

    def remove(self) -> None:
        """Delete the directory and its files (the caller removed the element first).

        Only a store's own files: a directory holding anything else is not
        a store (a wrong root, say) and is left alone with StoreAccessError."""
        entries = list(os.scandir(self.path))
        strange = [e.name for e in entries
                   if not STORE_FILE_RE.fullmatch(e.name) or not e.is_file(follow_symlinks=False)]
        if strange:
            raise StoreAccessError(f"{self.path} is not a store directory (it holds "
                                   f"{', '.join(sorted(strange)[:5])}): left alone")
        for entry in entries:
            os.unlink(entry.path)
        os.rmdir(self.path)


def _check_schema(path: str, state: dict) -> None:
    """StoreStateError unless the fields every reader relies on are there, with their types."""
    want = {"target": {"pid": int, "start_time": int}, "map": {"pin": str, "id": int, "name": str}}
    for part, fields in want.items():
        sub = state.get(part)
        if not isinstance(sub, dict):
            raise StoreStateError(f"{path} has no {part!r} record: not a state file this uptrkv wrote")
        for field, kind in fields.items():
            if not isinstance(sub.get(field), kind) or isinstance(sub.get(field), bool):
                raise StoreStateError(f"{path}: {part}.{field} is missing or not {kind.__name__}")


ROOT_LOCK = ".pins.lock"
_root_guard = threading.Lock()
_root_locks: dict[str, "_RootLockState"] = {}      # root -> this process's hold on its lock
_generation = 0                                     # bumped in a fork child: holds are not inherited


class _RootLockState:
    """One process's hold on one root's lock: a thread lock (threads of a process share the
    flock, so they must take turns themselves), the flock's fd, and the holder's depth."""

    def __init__(self):
        self.threads = threading.RLock()
        self.fd = -1
        self.depth = 0


class root_lock:
    """The runtime root's lock, for what the stores of a root share: a map pin.  create()
    holds it from making its directory until its state file names the pin; gc, destroy
    and drop_map_pin hold it while they decide that no store uses a pin any more.  So a
    pin is never removed under a store being made.  Between processes it is an flock
    (a killed holder's lock goes with it); between threads of one process, a lock of
    their own.  Re-entrant within a thread."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = os.path.realpath(runtime_root(root))

    def __enter__(self) -> "root_lock":
        with _root_guard:
            held = _root_locks.setdefault(self.root, _RootLockState())
            self._generation = _generation
        held.threads.acquire()
        try:
            if held.depth == 0:
                fd = os.open(os.path.join(self.root, ROOT_LOCK),
                             os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                held.fd = fd
            held.depth += 1
        except BaseException:
            held.threads.release()
            raise
        self._held = held
        return self

    def __exit__(self, *exc) -> None:
        if self._generation != _generation:         # forked inside the block: nothing is ours
            return
        held = self._held
        held.depth -= 1
        if held.depth == 0:
            os.close(held.fd)
            held.fd = -1
        held.threads.release()


def _forget_root_locks_in_child() -> None:
    """A fork child shares its parent's flock: close its copies, and start with no holds
    (a thread lock held by another thread of the parent would never be released here)."""
    global _root_locks, _root_guard, _generation
    for held in _root_locks.values():
        if held.fd >= 0:
            os.close(held.fd)
    _root_locks = {}
    _root_guard = threading.Lock()
    _generation += 1


os.register_at_fork(after_in_child=_forget_root_locks_in_child)


def pin_in_use(pin: str, root: str | os.PathLike | None = None, besides: str | None = None) -> bool:
    """Whether a store of root other than BESIDES records PIN as its map's pin (call with
    root_lock held: a store being made has its state file by the time the lock is free)."""
    for name in list_names(root):
        if name == besides:
            continue
        try:
            if StoreDir(name, root).read_state()["map"]["pin"] == pin:
                return True
        except (StoreStateError, OSError, KeyError, TypeError):
            continue            # no state: a creator that died before pinning anything for it
    return False


def list_names(root: str | os.PathLike | None = None) -> list[str]:
    root = runtime_root(root)
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False)
                      and NAME_RE.fullmatch(e.name))
    except FileNotFoundError:
        return []
