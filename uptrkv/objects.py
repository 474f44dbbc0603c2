"""Where the built BPF objects are, and which copy path to use.

Every program in ``bpf/`` is built twice: ``NAME.bpf.o`` (the stock copy
path) and ``NAME.dynptr.bpf.o`` (dynptr over uptr, which needs the verifier
patch in ``vm/``).  :func:`uptrkv.support.choose_copy_path` picks one for the running kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

COPY_PATHS = ("stock", "dynptr")
BPF_DIR_ENV = "UPTRKV_BPF_DIR"
COPY_PATH_ENV = "UPTRKV_COPY_PATH"


def bpf_dir() -> Path:
    env = os.environ.get(BPF_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build" / "bpf"


def object_path(name: str, copy_path: str = "stock") -> Path:
    """Path of a built object; FileNotFoundError says how to build it."""
    if copy_path not in COPY_PATHS:
        raise ValueError(f"copy path {copy_path!r} is not one of {', '.join(COPY_PATHS)}")
    suffix = ".dynptr.bpf.o" if copy_path == "dynptr" else ".bpf.o"
    path = bpf_dir() / (name + suffix)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `make bpf` (or set {BPF_DIR_ENV})")
    return path

