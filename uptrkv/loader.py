"""libbpf's object model in Python: object, map, program, link.

A :class:`BpfObject` owns the libbpf object and so every map and program fd
in it; a :class:`BpfLink` owns one attachment.  Both close deterministically
(``close()`` or ``with``).  Maps and programs are views that are valid while
their object is open.  Verifier rejections raise :class:`LoadError` whose
text includes the verifier log (for a program that record_verifier_stats,
the verifier's last message and statistics instead).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from . import _libbpf
from ._libbpf import U64, LibbpfError, check, hot, lib
from .btf import Btf, kernel_btf

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_MMAPABLE = 1 << 10

# Room for a verifier log at level 1; libbpf only asks for it after a failure.
VERIFIER_LOG_SIZE = 8 << 20
LOG_TAIL_LINES = 200


class LoadError(LibbpfError):
    """bpf_object__load failed; ``verifier_log`` holds the kernel's log."""

    def __init__(self, err: int, path: str, log: str, messages: str):
        lines = log.rstrip("\n").splitlines()
        tail = lines[-LOG_TAIL_LINES:]
        detail = messages
        if tail:
            cut = f" (last {len(tail)} of {len(lines)} lines)" if len(lines) > len(tail) else ""
            detail = f"verifier log{cut}:\n" + "\n".join(tail) + ("\n" + messages if messages else "")
        super().__init__(err, f"loading {path}", detail)
        self.verifier_log = log


class BpfLink:
    """One attachment of a program; detaches on close unless pinned."""

    def __init__(self, ptr: int, program_name: str):
        self._ptr = ptr
        self.program_name = program_name
        self.pin_path: str | None = None

    @property
    def fd(self) -> int:
        self._check()
        return lib.bpf_link__fd(self._ptr)

    def _check(self):
        if not self._ptr:
            raise ValueError(f"link of {self.program_name} is closed")

    def pin(self, path: str) -> None:
        self._check()
        lib.bpf_link__pin(self._ptr, os.fsencode(path))
        self.pin_path = path

    def unpin(self) -> None:
        self._check()
        lib.bpf_link__unpin(self._ptr)
        self.pin_path = None

    @property
    def closed(self) -> bool:
        return not self._ptr

    def close(self) -> None:
        """Detach (the kernel keeps a pinned link alive until it is unpinned)."""
        if self._ptr:
            lib.bpf_link__destroy(self._ptr)
            self._ptr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


@dataclass(frozen=True)
class VerifierStats:
    """The verifier's own account of checking one program (its log level 4)."""

    insns_processed: int
    insns_limit: int
    max_states_per_insn: int
    total_states: int
    peak_states: int

    _LINE = re.compile(r"processed (\d+) insns \(limit (\d+)\) max_states_per_insn (\d+) "
                       r"total_states (\d+) peak_states (\d+)")

    @classmethod
    def parse(cls, name: str, log: str) -> "VerifierStats":
        m = cls._LINE.search(log)
        if not m:
            raise ValueError(f"program {name}: no verifier statistics in its log ({log.strip()[:200]!r}); "
                             "was it loaded?")
        return cls(*map(int, m.groups()))


class BpfProgram:
    """A program of an object."""

    def __init__(self, ptr: int, obj: "BpfObject"):
        self._ptr = ptr
        self._obj = obj
        self.name = lib.bpf_program__name(ptr).decode()
        self.section = (lib.bpf_program__section_name(ptr) or b"").decode()

    @property
    def fd(self) -> int:
        self._obj._check()
        fd = lib.bpf_program__fd(self._ptr)
        if fd < 0:
            raise LibbpfError(-fd if fd < 0 else errno.EBADF, f"program {self.name} is not loaded")
        return fd

    def set_autoload(self, autoload: bool) -> None:
        self._obj._check(loaded=False)
        lib.bpf_program__set_autoload(self._ptr, autoload)

    @property
    def flags(self) -> int:
        """The BPF_F_* load flags (prog_flags) this program will be loaded with."""
        self._obj._check()
        return lib.bpf_program__flags(self._ptr)

    def set_flags(self, flags: int) -> None:
        """Before load: the BPF_F_* load flags, e.g. the verifier's BPF_F_TEST_* checks."""
        self._obj._check(loaded=False)
        lib.bpf_program__set_flags(self._ptr, flags)

    def record_verifier_stats(self) -> None:
        """Before load: have the verifier report what checking this program cost.

        Log level 4 (statistics) into a buffer of the object's; read it with
        verifier_stats after load. A rejection's LoadError then carries the
        verifier's last message and these statistics, not its whole log.
        """
        self._obj._check(loaded=False)
        buf = self._obj._stats_logs.setdefault(self.name, ctypes.create_string_buffer(4096))
        lib.bpf_program__set_log_buf(self._ptr, ctypes.cast(buf, ctypes.c_void_p), len(buf))
        lib.bpf_program__set_log_level(self._ptr, 4)

    @property
    def verifier_stats(self) -> VerifierStats:
        """What the verifier reported for this program (record_verifier_stats before load)."""
        buf = self._obj._stats_logs.get(self.name)
        if buf is None:
            raise ValueError(f"program {self.name}: call record_verifier_stats() before load")
        return VerifierStats.parse(self.name, buf.value.decode(errors="replace"))

    def attach(self) -> BpfLink:
        """Attach as the section name says (tracepoint, tp_btf, ...)."""
        self._obj._check(loaded=True)
        return BpfLink(lib.bpf_program__attach(self._ptr), self.name)

    def xlated(self) -> bytes:
        """The program as the verifier left it (8-byte instructions, subprograms after main)."""
        info = _libbpf.bpf_prog_info()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        lib.bpf_obj_get_info_by_fd(self.fd, ctypes.byref(info), ctypes.byref(size))
        buf = ctypes.create_string_buffer(info.xlated_prog_len)
        info = _libbpf.bpf_prog_info(xlated_prog_len=len(buf),
                                     xlated_prog_insns=ctypes.addressof(buf))
        lib.bpf_obj_get_info_by_fd(self.fd, ctypes.byref(info), ctypes.byref(size))
        return buf.raw[:info.xlated_prog_len]

    def test_run(self, ctx: bytes | None = None) -> int:
        """Run once with BPF_PROG_TEST_RUN in the calling task; return its return value."""
        opts = _libbpf.bpf_test_run_opts(sz=ctypes.sizeof(_libbpf.bpf_test_run_opts))
        if ctx:
            buf = ctypes.create_string_buffer(ctx, len(ctx))
            opts.ctx_in = ctypes.cast(buf, ctypes.c_void_p)
            opts.ctx_size_in = len(ctx)
        check(hot.bpf_prog_test_run_opts(self.fd, ctypes.byref(opts)), "bpf_prog_test_run_opts")
        return opts.retval


def _map_attr(fn: str) -> property:
    """A read-only map attribute that libbpf returns as a plain integer."""
    return property(lambda self: getattr(lib, fn)(self._ptr), doc=f"{fn}() of this map")


class BpfMap:
    """A map of an object."""

    def __init__(self, ptr: int, obj: "BpfObject"):
        self._ptr = ptr
        self._obj = obj
        self.name = lib.bpf_map__name(ptr).decode()
        self._fast: tuple[int, int, int] | None = None
        self._vbuf = None

    @property
    def fd(self) -> int:
        self._obj._check()
        fd = lib.bpf_map__fd(self._ptr)
        if fd < 0:
            raise LibbpfError(-fd, f"map {self.name} is not created (load the object first)")
        return fd

    type = _map_attr("bpf_map__type")
    key_size = _map_attr("bpf_map__key_size")
    value_size = _map_attr("bpf_map__value_size")
    flags = _map_attr("bpf_map__map_flags")
    btf_value_type_id = _map_attr("bpf_map__btf_value_type_id")

    @property
    def btf(self) -> Btf:
        return self._obj.btf

    @property
    def source(self) -> str:
        """Path of the object this map belongs to."""
        return self._obj.path

    def pin(self, path: str) -> None:
        self._obj._check(loaded=True)
        lib.bpf_map__pin(self._ptr, os.fsencode(path))

    def unpin(self, path: str) -> None:
        self._obj._check()
        lib.bpf_map__unpin(self._ptr, os.fsencode(path))

    def reuse_fd(self, fd: int) -> None:
        """Make this map, before load, be the map behind fd (libbpf dups it)."""
        self._obj._check(loaded=False)
        lib.bpf_map__reuse_fd(self._ptr, fd)
        self._fast = None

    def handle(self) -> MapHandle:
        """A new fd on this map that stays valid after the object closes."""
        return MapHandle.of(self)

    def reuse_pinned(self, path: str) -> None:
        """Make this map, before load, use the map pinned at path."""
        self._obj._check(loaded=False)
        fd = lib.bpf_obj_get(os.fsencode(path))
        try:
            self.reuse_fd(fd)
        finally:
            os.close(fd)

    def _hot(self) -> tuple[int, int, int]:
        """(fd, key size, value size), fixed once the object is loaded."""
        fast = self._fast
        if fast is not None and self._obj._ptr:
            return fast
        self._obj._check()
        self._vbuf = None
        fast = (self.fd, self.key_size, self.value_size)
        if self._obj.loaded:
            self._fast = fast
        return fast

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        fd, ksize, vsize = self._hot()
        if len(key) != ksize:
            raise ValueError(f"map {self.name} takes {ksize}-byte keys, got {len(key)}")
        if len(value) != vsize:
            raise ValueError(f"map {self.name} takes {vsize}-byte values, got {len(value)}")
        check(hot.bpf_map_update_elem(fd, bytes(key), bytes(value), U64[flags & 7] if 0 <= flags < 8
                                      else ctypes.c_uint64(flags)), "bpf_map_update_elem")

    def lookup(self, key: bytes) -> bytes | None:
        fast = self._fast
        if fast is None or not self._obj._ptr:
            fast = self._hot()
        fd, ksize, vsize = fast
        if len(key) != ksize:
            raise ValueError(f"map {self.name} takes {ksize}-byte keys, got {len(key)}")
        buf, self._vbuf = self._vbuf, None          # another thread may hold it: then a new one
        if buf is None:
            buf = ctypes.create_string_buffer(vsize)
        rc = hot.bpf_map_lookup_elem(fd, key if key.__class__ is bytes else bytes(key), buf)
        if rc < 0:
            self._vbuf = buf
            if rc == -errno.ENOENT:
                return None
            check(rc, "bpf_map_lookup_elem")
        value = buf.raw
        self._vbuf = buf
        return value

    def delete(self, key: bytes) -> bool:
        """Delete key; False if it was not there."""
        fd, ksize, _ = self._hot()
        if len(key) != ksize:
            raise ValueError(f"map {self.name} takes {ksize}-byte keys, got {len(key)}")
        rc = hot.bpf_map_delete_elem(fd, bytes(key))
        if rc == -errno.ENOENT:
            return False
        check(rc, "bpf_map_delete_elem")
        return True


def _map_info(fd: int) -> "_libbpf.bpf_map_info":
    info = _libbpf.bpf_map_info()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size))
    return info


class MapHandle:
    """An fd of its own on a map, independent of the object it came from.

    A store keeps one so that it outlives the object that created its map:
    a rollout closes the old object while the store and the map go on.
    """

    def __init__(self, fd: int, name: str, key_size: int, value_size: int):
        self._fd = fd
        self.name = name
        self.key_size = key_size
        self.value_size = value_size
        self._info: _libbpf.bpf_map_info | None = None

    @classmethod
    def of(cls, m: "BpfMap") -> "MapHandle":
        return cls(os.dup(m.fd), m.name, m.key_size, m.value_size)

    @classmethod
    def from_fd(cls, fd: int) -> "MapHandle":
        """Take ownership of fd, a map's; its name and sizes come from the kernel."""
        try:
            info = _map_info(fd)
        except BaseException:
            os.close(fd)
            raise
        handle = cls(fd, info.name.decode(errors="replace"), info.key_size, info.value_size)
        handle._info = info
        return handle

    @classmethod
    def from_id(cls, map_id: int) -> "MapHandle":
        """The map with this kernel id (ENOENT once the map is gone)."""
        try:
            fd = lib.bpf_map_get_fd_by_id(map_id)
        except LibbpfError as exc:
            raise LibbpfError(exc.errno, f"cannot open map id {map_id}") from None
        return cls.from_fd(fd)

    @classmethod
    def open_pinned(cls, path: str | os.PathLike) -> "MapHandle":
        """The map pinned at path on bpffs (by this project, bpftool or any loader)."""
        try:
            fd = lib.bpf_obj_get(os.fsencode(path))
        except LibbpfError as exc:
            raise LibbpfError(exc.errno, f"cannot open the map pinned at {os.fspath(path)}") from None
        return cls.from_fd(fd)

    def info(self) -> "_libbpf.bpf_map_info":
        if self._info is None:
            self._info = _map_info(self.fd)
        return self._info

    @property
    def type(self) -> int:
        return self.info().type

    @property
    def id(self) -> int:
        """The kernel's id of the map: the same from every fd and every process."""
        return self.info().id

    @property
    def btf(self) -> Btf:
        """The map's BTF as the kernel holds it (the object file is not needed)."""
        info = self.info()
        if not info.btf_id:
            raise LibbpfError(errno.ENOENT, f"map {self.name} (id {info.id}) carries no BTF; "
                              "load it from an object built with -g")
        return kernel_btf(info.btf_id)

    @property
    def source(self) -> str:
        return f"map {self.name} (id {self.id})"

    def handle(self) -> "MapHandle":
        """Another fd on the same map."""
        return MapHandle(os.dup(self.fd), self.name, self.key_size, self.value_size)

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"handle of map {self.name} is closed")
        return self._fd

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(key) != self.key_size or len(value) != self.value_size:
            raise ValueError(f"map {self.name} takes {self.key_size}-byte keys and "
                             f"{self.value_size}-byte values")
        check(hot.bpf_map_update_elem(self.fd, bytes(key), bytes(value), ctypes.c_uint64(flags)),
              "bpf_map_update_elem")

    def lookup(self, key: bytes) -> bytes | None:
        """The value of key, or None if it is not there."""
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name} takes {self.key_size}-byte keys")
        kbuf = ctypes.create_string_buffer(key, len(key))
        vbuf = ctypes.create_string_buffer(self.value_size)
        try:
            lib.bpf_map_lookup_elem(self.fd, kbuf, vbuf)
        except LibbpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return vbuf.raw

    def delete(self, key: bytes) -> bool:
        """Delete key; False if it was not there."""
        rc = hot.bpf_map_delete_elem(self.fd, bytes(key))
        if rc == -errno.ENOENT:
            return False
        check(rc, "bpf_map_delete_elem")
        return True

    def pin(self, path: str) -> None:
        lib.bpf_obj_pin(self.fd, os.fsencode(path))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class GlobalData:
    """Global variables of an object's data sections, by name.

    Before load, reads and writes go to the initial values libbpf will use;
    after load, to the kernel's maps through a shared mmap (no syscall).
    ``.rodata`` is read-only after load (the kernel freezes it).
    """

    def __init__(self, obj: "BpfObject"):
        self._obj = obj
        self._vars: dict[str, tuple[BpfMap, int, int]] = {}
        self._mmaps: dict[str, mmap.mmap] = {}
        for m in obj.maps():
            if not m.name.endswith((".bss", ".data", ".rodata")) and ".data." not in m.name \
                    and ".rodata." not in m.name:
                continue
            for name, (off, size) in obj.btf.datasec(m.btf_value_type_id).items():
                self._vars[name] = (m, off, size)

    def names(self) -> list[str]:
        return sorted(self._vars)

    def _locate(self, name: str):
        try:
            return self._vars[name]
        except KeyError:
            raise KeyError(f"no global variable {name!r} in {self._obj.path}") from None

    def _buffer(self, m: BpfMap):
        """A writable (or read-only) buffer over the map's whole value."""
        if not self._obj.loaded:
            size = ctypes.c_size_t()
            ptr = lib.bpf_map__initial_value(m._ptr, ctypes.byref(size))
            if not ptr:
                raise LibbpfError(errno.ENOENT, f"map {m.name} has no initial value")
            return (ctypes.c_char * size.value).from_address(ptr)
        mm = self._mmaps.get(m.name)
        if mm is None:
            if not m.flags & BPF_F_MMAPABLE:
                raise LibbpfError(errno.EOPNOTSUPP, f"map {m.name} is not mmapable")
            length = -(-m.value_size // mmap.PAGESIZE) * mmap.PAGESIZE
            prot = mmap.PROT_READ if m.flags & BPF_F_RDONLY_PROG else mmap.PROT_READ | mmap.PROT_WRITE
            mm = mmap.mmap(m.fd, length, mmap.MAP_SHARED, prot)
            self._mmaps[m.name] = mm
        return mm

    def read(self, name: str) -> bytes:
        m, off, size = self._locate(name)
        with memoryview(self._buffer(m)) as view, view.cast("B") as raw:
            return bytes(raw[off:off + size])

    def write(self, name: str, data: bytes, offset: int = 0) -> None:
        m, off, size = self._locate(name)
        if offset < 0 or offset + len(data) > size:
            raise ValueError(f"{name} is {size} bytes; cannot write {len(data)} at {offset}")
        buf = self._buffer(m)
        if self._obj.loaded and m.flags & BPF_F_RDONLY_PROG:
            raise PermissionError(f"{name} is in {m.name}, read-only after load")
        with memoryview(buf) as view, view.cast("B") as raw:
            raw[off + offset:off + offset + len(data)] = data

    def get_int(self, name: str, signed: bool = True) -> int:
        return int.from_bytes(self.read(name), "little", signed=signed)

    def set_int(self, name: str, value: int) -> None:
        size = self._locate(name)[2]
        self.write(name, value.to_bytes(size, "little", signed=value < 0))

    def close(self) -> None:
        for mm in self._mmaps.values():
            mm.close()
        self._mmaps.clear()


class BpfObject:
    """An ELF BPF object opened with libbpf; load() creates maps and verifies programs."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise FileNotFoundError(errno.ENOENT, "BPF object not found (run `make bpf`)", self.path)
        self._log = ctypes.create_string_buffer(VERIFIER_LOG_SIZE)
        self._stats_logs: dict[str, ctypes.Array] = {}      # record_verifier_stats
        opts = _libbpf.bpf_object_open_opts(sz=ctypes.sizeof(_libbpf.bpf_object_open_opts))
        opts.kernel_log_buf = ctypes.cast(self._log, ctypes.c_void_p)
        opts.kernel_log_size = VERIFIER_LOG_SIZE
        opts.kernel_log_level = 0
        _libbpf.take_messages()
        self._ptr = lib.bpf_object__open_file(os.fsencode(self.path), ctypes.byref(opts))
        self.loaded = False
        self._globals: GlobalData | None = None
        self._on_close: list[Callable[[], None]] = []

    def _check(self, loaded: bool | None = None):
        if not self._ptr:
            raise ValueError(f"BPF object {self.path} is closed")
        if loaded is True and not self.loaded:
            raise ValueError(f"BPF object {self.path} is not loaded yet")
        if loaded is False and self.loaded:
            raise ValueError(f"BPF object {self.path} is already loaded")

    @property
    def name(self) -> str:
        self._check()
        return lib.bpf_object__name(self._ptr).decode()

    @property
    def btf(self) -> Btf:
        self._check()
        ptr = lib.bpf_object__btf(self._ptr)
        if not ptr:
            raise LibbpfError(errno.ENOENT, f"{self.path} has no BTF (build it with -g)")
        return Btf(ptr, self)

    def maps(self) -> Iterator[BpfMap]:
        self._check()
        ptr = None
        while True:
            ptr = lib.bpf_object__next_map(self._ptr, ptr)
            if not ptr:
                return
            yield BpfMap(ptr, self)

    def programs(self) -> Iterator[BpfProgram]:
        self._check()
        ptr = None
        while True:
            ptr = lib.bpf_object__next_program(self._ptr, ptr)
            if not ptr:
                return
            yield BpfProgram(ptr, self)

    def map(self, name: str) -> BpfMap:
        for m in self.maps():
            if m.name == name:
                return m
        raise KeyError(f"no map {name!r} in {self.path}")

    def program(self, name: str) -> BpfProgram:
        for p in self.programs():
            if p.name == name:
                return p
        raise KeyError(f"no program {name!r} in {self.path}")

    @property
    def globals(self) -> GlobalData:
        self._check()
        if self._globals is None:
            self._globals = GlobalData(self)
        return self._globals

    def load(self) -> "BpfObject":
        self._check(loaded=False)
        if self._globals is not None:
            self._globals.close()
        _libbpf.take_messages()
        try:
            lib.bpf_object__load(self._ptr)
        except LibbpfError as exc:
            log = self._log.value.decode(errors="replace")
            if not log.strip() and self._stats_logs:
                # libbpf wrote the recording programs' logs (level 4) to their own buffers
                log = "".join(f"{name}: {buf.value.decode(errors='replace').strip()}\n"
                              for name, buf in self._stats_logs.items()) + \
                    ("(log level 4, for record_verifier_stats: the verifier's last message and "
                     "statistics, not its whole log; load without it for that)\n")
            raise LoadError(exc.errno, self.path, log, exc.detail) from None
        self.loaded = True
        return self

    def on_close(self, fn: Callable[[], None]) -> None:
        """Call fn once when this object closes (a store releases its holds for it)."""
        self._check()
        self._on_close.append(fn)

    def close(self) -> None:
        if getattr(self, "_globals", None) is not None:
            self._globals.close()
            self._globals = None
        if getattr(self, "_ptr", None):
            lib.bpf_object__close(self._ptr)
            self._ptr = None
        hooks, self._on_close = getattr(self, "_on_close", []), []
        errors = []
        for fn in hooks:
            try:
                fn()
            except Exception as exc:     # every hook runs; the first failure is raised
                errors.append(exc)
        if errors:
            raise errors[0]

    @property
    def closed(self) -> bool:
        return not self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()
