"""BpfOps: kv_store_get/put/delete run in BPF from Python (bpf/test_kv_ops.bpf.c).

A module of its own, without pytest: the helper scripts that tests run as
subprocesses import it, and importing pytest (through conftest) cost each of
them seconds in the TCG guest.
"""

KV_TEST_GET, KV_TEST_PUT, KV_TEST_DELETE = 1, 2, 3


class BpfOps:
    """Drives kv_store_get/put/delete in BPF through test_kv_ops and BPF_PROG_TEST_RUN."""

    def __init__(self, obj):
        self.obj = obj
        self.g = obj.globals
        self.prog = obj.program("kv_ops")

    def _run(self, op: int, key: int, size: int) -> int:
        self.g.set_int("op", op)
        self.g.set_int("key", key & 0xFFFFFFFF)
        self.g.set_int("size", size)
        self.prog.test_run()
        return self.g.get_int("ret")

    def get(self, key: int, size: int = 4096) -> tuple[int, bytes]:
        ret = self._run(KV_TEST_GET, key, size)
        return ret, (self.g.read("buf")[:ret] if ret > 0 else b"")

    def put(self, key: int, data: bytes) -> int:
        self.g.write("buf", data)
        return self._run(KV_TEST_PUT, key, len(data))

    def delete(self, key: int) -> int:
        return self._run(KV_TEST_DELETE, key, 0)
