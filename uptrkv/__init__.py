"""uptrkv: a key-value store shared by BPF programs and user space through uptr pages.

Modules, from the bottom up: ``_libbpf`` (ctypes binding), ``btf`` and
``loader`` (libbpf's object model), ``layout`` (read from BTF), ``allocator``
(pure Python), ``store`` (KVStore), ``support`` (kernel probes), ``manifest``
and ``rollout``, then ``demo`` and ``cli``.  Importing the package itself
loads nothing, so the pure parts work without libbpf.
"""

__version__ = "0.1.0"
