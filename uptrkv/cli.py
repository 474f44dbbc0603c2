"""Command line: ``uptrkv demo | check | layout OBJECT | manifest check|header | plan``."""

from __future__ import annotations

import argparse
import sys

from .errors import UptrkvError


def _demo(args) -> int:
    from . import demo
    demo.run(calls=args.calls, copy_path=args.copy_path)
    return 0


# `uptrkv check` exits with this when the kernel (or this process) cannot
# host a store; ./run then runs the demo and the tests in the VM instead.
EXIT_UNSUPPORTED = 3


def _check(args) -> int:
    from .errors import UnsupportedKernelError
    from .support import check_kernel, dynptr_over_uptr_supported
    try:
        print(check_kernel())
    except UnsupportedKernelError as exc:
        print(f"uptrkv: unsupported: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    print("dynptr over uptr:", "accepted (patched verifier)" if dynptr_over_uptr_supported()
          else "rejected (stock verifier; the stock copy path is used)")
    return 0


def _layout(args) -> int:
    from .layout import Layout
    from .loader import BpfObject
    with BpfObject(args.object) as obj:
        lay = Layout.from_btf(obj.btf, args.object)
    for field in ("max_keys", "page_size", "max_pages", "max_value_size", "value_size"):
        print(f"{field:15} {getattr(lay, field)}")
    print(f"{'entry':15} off<<{lay.off_shift} (size-1)<<{lay.size_shift} "
          f"page<<{lay.page_shift} init<<{lay.init_shift}")
    return 0


def _manifest_check(args) -> int:
    from .manifest import load_manifest
    m = load_manifest(args.toml, args.object)
    sources = " and ".join(str(x) for x in (args.toml, args.object) if x)
    print(f"{sources}: {len(m.keys)} keys, {m.total_size()} bytes")
    for k in m.keys:
        init = f"  init {k.format(k.init)}" if k.init is not None else ""
        print(f"  {k.id:>4}  {k.name:<24} {k.size:>4} B  {k.type or '-':<5}{init}")
    return 0


def _manifest_header(args) -> int:
    from .manifest import read_toml
    sys.stdout.write(read_toml(args.toml).c_header())
    return 0


def _plan(args) -> int:
    """Diff two manifests (no store: the space check needs the owning process)."""
    from .manifest import read_toml
    from .rollout import Plan, diff
    p: Plan = diff(read_toml(args.old), read_toml(args.new))
    print(p.table())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uptrkv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo program on tp_btf/sys_enter and print the store")
    p.add_argument("--calls", type=int, default=25, help="syscalls to make while attached")
    p.add_argument("--copy-path", choices=("auto", "stock", "dynptr"), default=None)
    p.set_defaults(func=_demo)
    p = sub.add_parser("check", help="probe the kernel for uptr and dynptr-over-uptr support "
                       f"(exit {EXIT_UNSUPPORTED}: this kernel cannot host a store)")
    p.set_defaults(func=_check)
    p = sub.add_parser("layout", help="print the store layout read from an object's BTF")
    p.add_argument("object")
    p.set_defaults(func=_layout)
    p = sub.add_parser("manifest", help="validate a manifest or generate KV_KEY() lines from it")
    msub = p.add_subparsers(dest="manifest_command", required=True)
    q = msub.add_parser("check", help="validate a TOML manifest and/or an object's embedded one")
    q.add_argument("toml", nargs="?")
    q.add_argument("--object", help="BPF object whose .uptrkv.manifest must agree")
    q.set_defaults(func=_manifest_check)
    q = msub.add_parser("header", help="print KV_KEY() declarations for a TOML manifest")
    q.add_argument("toml")
    q.set_defaults(func=_manifest_header)
    p = sub.add_parser("plan", help="diff two manifests: keys kept, added, removed, resized")
    p.add_argument("old")
    p.add_argument("new")
    p.set_defaults(func=_plan)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UptrkvError, OSError) as exc:
        print(f"uptrkv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
