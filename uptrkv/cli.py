"""Command line: ``uptrkv demo | check | layout OBJECT``."""

from __future__ import annotations

import argparse
import sys

from .errors import UptrkvError


def _demo(args) -> int:
    from . import demo
    demo.run(calls=args.calls, copy_path=args.copy_path)
    return 0


def _check(args) -> int:
    from .support import check_kernel, dynptr_over_uptr_supported
    print(check_kernel())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uptrkv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo program on tp_btf/sys_enter and print the store")
    p.add_argument("--calls", type=int, default=25, help="syscalls to make while attached")
    p.add_argument("--copy-path", choices=("auto", "stock", "dynptr"), default=None)
    p.set_defaults(func=_demo)
    p = sub.add_parser("check", help="probe the kernel for uptr and dynptr-over-uptr support")
    p.set_defaults(func=_check)
    p = sub.add_parser("layout", help="print the store layout read from an object's BTF")
    p.add_argument("object")
    p.set_defaults(func=_layout)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UptrkvError, OSError) as exc:
        print(f"uptrkv: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
