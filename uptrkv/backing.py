"""The memory behind a store's pages: anonymous for a private store, tmpfs files for a named one.

A page is registered as a uptr by its address in the registering process;
the kernel pins the physical page, so any mapping of the same memory sees
what BPF sees.  A private store's pages are private anonymous memory wiped
on fork (a child never sees the parent's values).  A named store's pages are
files on tmpfs mapped shared: another process that maps the same files
reads and writes the very pages BPF uses, and they outlive every process.
``MADV_WIPEONFORK`` applies only to private anonymous memory, which is why
one mechanism cannot serve both.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os

MADV_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18)
TMPFS_MAGIC = 0x01021994
FILE_MODE = 0o600


class Page:
    """One page-sized mapping: its address (for registration) and typed views."""

    def __init__(self, mm: mmap.mmap):
        self.mm = mm
        anchor = ctypes.c_char.from_buffer(mm)
        self.address = ctypes.addressof(anchor)
        del anchor
        self.view = memoryview(mm)
        self.u32 = self.view.cast("I")
        self.u64 = self.view.cast("Q")

    def close(self) -> None:
        for v in (self.u64, self.u32, self.view):
            v.release()
        self.mm.close()


class AnonymousBacking:
    """Pages of this process only, gone when it unmaps them or exits."""

    named = False

    def __init__(self, page_size: int):
        self.page_size = page_size

    def _page(self) -> Page:
        mm = mmap.mmap(-1, self.page_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            mm.madvise(MADV_WIPEONFORK)
        except OSError:
            mm.close()
            raise
        return Page(mm)

    def meta(self) -> Page:
        return self._page()

    def data(self, index: int) -> Page:
        return self._page()

    def existing_data_pages(self) -> int:
        return 0

    def drop(self, index: int) -> None:
        """Data page index is no longer registered (nothing to remove)."""


def is_tmpfs(path: str) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_long * 16)()             # struct statfs starts with long f_type
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs({path}): {os.strerror(err)}")
    return buf[0] & 0xFFFFFFFF == TMPFS_MAGIC


def require_tmpfs(path: str) -> None:
    """Uptr pages of a file must be shmem: the kernel pins them for as long as they are
    registered, which it refuses or cannot honour for files of other filesystems."""
    if not is_tmpfs(path):
        raise OSError(errno.EINVAL, f"{path} is not on tmpfs: named stores keep their pages in "
                      "tmpfs files; choose a runtime root on tmpfs (such as /run/uptrkv or /dev/shm/uptrkv)")


class FileBacking:
    """Pages in files ``meta`` and ``page0``.. of a directory on tmpfs, mapped shared."""

    named = True

    def __init__(self, directory: str, page_size: int, create: bool, readonly: bool = False):
        self.directory = directory
        self.page_size = page_size
        self.create = create
        self.readonly = readonly          # a reader maps the files as they are, creating none

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _page(self, name: str, create: bool) -> Page:
        path = self.path(name)
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
        if create:
            flags |= os.O_CREAT | os.O_EXCL
        fd = os.open(path, flags, FILE_MODE)
        try:
            if create:
                os.ftruncate(fd, self.page_size)
            size = os.fstat(fd).st_size
            if size != self.page_size:
                raise OSError(errno.EINVAL, f"{path} is {size} bytes, a page is {self.page_size}")
            mm = mmap.mmap(fd, self.page_size, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return Page(mm)

    def meta(self) -> Page:
        return self._page("meta", self.create)

    def data(self, index: int) -> Page:
        """Data page index: the existing file, or a new zero one."""
        name = f"page{index}"
        return self._page(name, not self.readonly and not os.path.exists(self.path(name)))

    def existing_data_pages(self) -> int:
        """How many data page files exist (page0.. without a gap)."""
        n = 0
        while os.path.exists(self.path(f"page{n}")):
            n += 1
        return n

    def drop(self, index: int) -> None:
        """Remove data page index's file once it is no longer registered."""
        try:
            os.unlink(self.path(f"page{index}"))
        except FileNotFoundError:
            pass
