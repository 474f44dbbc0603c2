"""Command line: ``uptrkv demo | check | layout | manifest | plan`` and the ops commands on
named stores: ``create | seed | get | put | delete | ls | dump | attach | detach | links |
rollout | destroy | gc``.

Every command takes ``--json``; exit status 0 on success, 1 on failure (one
line ``uptrkv: error: ...`` on stderr and, with ``--json``, ``{"error": ..., "kind": ...}``
on stdout, so a script piping to jq sees the failure), 2 on bad usage (with ``--json``,
``"kind": "usage"``).  ``--root`` and
``--bpffs`` (defaults: $UPTRKV_ROOT or /run/uptrkv (/dev/shm/uptrkv where /run is not tmpfs), $UPTRKV_BPFFS or
/sys/fs/bpf/uptrkv) say where stores and pins live."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import UptrkvError


def _demo(args) -> int:
    import io
    from . import demo
    if args.json:
        after = demo.run(calls=args.calls, copy_path=args.copy_path, out=io.StringIO())
        _emit_json({"values": after})
    else:
        demo.run(calls=args.calls, copy_path=args.copy_path)
    return 0


# `uptrkv check` exits with this when the kernel (or this process) cannot
# host a store; ./run then runs the demo and the tests in the VM instead.
EXIT_UNSUPPORTED = 3


def _check(args) -> int:
    from .errors import UnsupportedKernelError
    from .support import check_kernel, dynptr_over_uptr_supported
    try:
        supported = check_kernel()
    except UnsupportedKernelError as exc:
        print(f"uptrkv: unsupported: {exc}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    dynptr = dynptr_over_uptr_supported()
    if args.json:
        _emit_json({"supported": str(supported), "dynptr_over_uptr": dynptr})
        return 0
    print(supported)
    print("dynptr over uptr:", "accepted (patched verifier)" if dynptr
          else "rejected (stock verifier; the stock copy path is used)")
    return 0


def _layout(args) -> int:
    from .layout import Layout
    from .loader import BpfObject
    with BpfObject(args.object) as obj:
        lay = Layout.from_btf(obj.btf, args.object)
    if args.json:
        from dataclasses import asdict
        _emit_json(asdict(lay))
        return 0
    for field in ("max_keys", "page_size", "max_pages", "max_value_size", "value_size"):
        print(f"{field:15} {getattr(lay, field)}")
    print(f"{'entry':15} off<<{lay.off_shift} (size-1)<<{lay.size_shift} "
          f"page<<{lay.page_shift} init<<{lay.init_shift}")
    return 0


def _manifest_check(args) -> int:
    from .manifest import load_manifest
    m = load_manifest(args.toml, args.object)
    sources = " and ".join(str(x) for x in (args.toml, args.object) if x)
    if args.json:
        _emit_json({"sources": sources, **m.to_dict(), "bytes": m.total_size()})
        return 0
    print(f"{sources}: {len(m.keys)} keys, {m.total_size()} bytes")
    for k in m.keys:
        init = f"  init {k.format(k.init)}" if k.init is not None else ""
        print(f"  {k.id:>4}  {k.name:<24} {k.size:>4} B  {k.type or '-':<5}{init}")
    return 0


def _manifest_header(args) -> int:
    from .manifest import read_toml
    header = read_toml(args.toml).c_header()
    if args.json:
        _emit_json({"header": header})
        return 0
    sys.stdout.write(header)
    return 0


def _plan(args) -> int:
    """Diff two manifests (no store: the space check needs the owning process)."""
    from .manifest import read_toml
    from .rollout import Plan, diff
    p: Plan = diff(read_toml(args.old), read_toml(args.new))
    if args.json:
        _emit_json(_plan_json(p))
        return 0
    print(p.table())
    return 0


# --- output ------------------------------------------------------------------------

def _emit_json(data) -> None:
    print(json.dumps(data, indent=1, sort_keys=True))


def _table(head: tuple, rows: list) -> str:
    rows = [tuple(str(c) for c in head)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _plan_json(p) -> dict:
    head = ("change", "id", "name", "bytes", "note")
    return {"old": p.old.source, "new": p.new.source,
            "changes": [dict(zip(head, r)) for r in p.rows()],
            "space": {"bytes_added": p.bytes_added, "bytes_converted": p.bytes_converted,
                      "free_before": p.free_before, "pages_before": p.pages_before,
                      "pages_during": p.pages_during}}


# --- ops on named stores ------------------------------------------------------------

def _open(args, readonly: bool = False):
    from .named_store import NamedStore
    store = NamedStore.open(args.name, readonly=readonly)
    if not readonly:
        from . import deploy
        try:
            note = deploy.settle(store)
        except BaseException:
            store.close()
            raise
        if note:
            print(f"uptrkv: {note}", file=sys.stderr)
    return store


def _value_json(store, kid: int, spec, raw: bytes) -> dict:
    return {"key": kid, "name": spec.name if spec else None, "type": spec.type if spec else None,
            "size": len(raw), "value": spec.decode(raw) if spec else raw.hex(), "hex": raw.hex()}


def _default_name(manifest, obj_path, pid: int) -> str:
    import re
    base = (manifest.program.get("name") if manifest is not None else None) or \
        (os.path.basename(obj_path).split(".")[0] if obj_path else "store")
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", str(base))[:40]
    return f"{base}-{pid}"


def _create(args) -> int:
    from . import deploy
    from .loader import BpfObject
    from .manifest import load_manifest, read_object, read_toml
    from .named_store import NamedStore
    mpath = os.path.abspath(args.manifest) if args.manifest else None
    if args.object:
        manifest = load_manifest(mpath, args.object) if mpath else read_object(args.object)
    else:
        manifest = read_toml(mpath) if mpath else None
    name = args.store_name or _default_name(manifest, args.object, args.pid)
    recorded = manifest.to_dict() if manifest is not None else None
    if args.object:
        with BpfObject(args.object) as obj:
            for prog in obj.programs():          # only the maps: programs load at attach
                prog.set_autoload(False)
            obj.load()
            store = NamedStore.create(obj, name, pid=args.pid, manifest=recorded)
    else:
        store = NamedStore.create(args.map, name, pid=args.pid, manifest=recorded)
    try:
        if manifest is not None:
            store.put_many(deploy.initial_values(store, manifest))
        info = {"name": name, "pid": args.pid, "map": store.state["map"]["pin"],
                "keys": len(store.keys()), "manifest": manifest.source if manifest else None}
    finally:
        store.close()
    if args.json:
        _emit_json(info)
    else:
        print(f"created store {name} for pid {args.pid} ({info['keys']} keys; map {info['map']})")
    return 0


def _read_values(path: str) -> dict:
    import tomllib
    from .errors import InvalidValueError
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidValueError(f"{path}: not valid TOML: {exc}") from None
    if set(doc) == {"values"} and isinstance(doc["values"], dict):
        doc = doc["values"]
    for key, value in doc.items():
        if isinstance(value, dict):
            raise InvalidValueError(f"{path}: {key!r} is a table; give name = value lines "
                                    "(at the top level or in one [values] table)")
    return doc


def _seed(args) -> int:
    from . import deploy
    values = _read_values(args.file)
    with _open(args) as store:
        items = deploy.seed(store, None, values)
    if args.json:
        _emit_json({"store": args.name, "keys": sorted(items)})
    else:
        print(f"seeded {len(items)} key(s) of store {args.name}")
    return 0


def _get(args) -> int:
    from . import deploy
    with _open(args, readonly=True) as store:
        kid, spec = deploy.key_spec(store, args.key)
        raw = store.get(kid)
    out = _value_json(store, kid, spec, raw)
    if args.json:
        _emit_json(out)
    else:
        print(out["value"])
    return 0


def _put(args) -> int:
    from . import deploy
    with _open(args) as store:
        kid, spec = deploy.key_spec(store, args.key)
        raw = deploy.encode_values(store, {args.key: args.value})[kid]
        store.put(kid, raw)
    if args.json:
        _emit_json(_value_json(None, kid, spec, raw))
    return 0


def _delete(args) -> int:
    from . import deploy
    with _open(args) as store:
        kid, spec = deploy.key_spec(store, args.key)
        store.delete(kid)
    if args.json:
        _emit_json({"key": kid, "deleted": True})
    return 0


def _store_info(name: str) -> dict:
    """What ls shows of one store; never takes the writer lock, never fails."""
    from . import deploy
    from .errors import TargetGoneError
    from .named import StoreDir, Target
    from .named_store import NamedStore
    info = {"name": name, "pid": None, "alive": None, "pages": None, "used": None,
            "capacity": None, "programs": [], "error": None}
    try:
        d = StoreDir(name)
        d.check()                       # a state file someone else could write is not believed
        state = d.read_state()
        info["pid"] = state["target"]["pid"]
        info["alive"] = Target(**state["target"]).alive()
        info["programs"] = [{"program": p, "pinned": os.path.exists(r["pin"])}
                            for p, r in sorted((state.get("links") or {}).items())]
    except Exception as exc:            # noqa: BLE001 - shown in the listing
        info["error"] = _message(exc)
        return info
    if not info["alive"]:
        return info
    try:
        with NamedStore.open(name, readonly=True) as store:
            info["pages"] = store.pages
            info["used"] = sum(s.size for s in store.slots().values())
            info["capacity"] = store.layout.max_pages * store.layout.page_size
            info["keys"] = len(store.keys())
            info["programs"] = [{"program": r["program"], "pinned": r["pinned"]} for r in deploy.links(store)]
    except TargetGoneError:
        info["alive"] = False
    except Exception as exc:            # noqa: BLE001
        info["error"] = _message(exc)
    return info


def _ls(args) -> int:
    from .named import list_names
    infos = [_store_info(n) for n in list_names()]
    if args.json:
        _emit_json({"stores": infos})
        return 0
    rows = []
    for i in infos:
        progs = ", ".join(p["program"] + ("" if p["pinned"] else " (pin missing)") for p in i["programs"])
        fill = f"{i['used']}/{i['capacity']}" if i["used"] is not None else "-"
        alive = {True: "yes", False: "no (`uptrkv gc` removes it)", None: "?"}[i["alive"]]
        rows.append((i["name"], i["pid"] if i["pid"] is not None else "?", alive,
                     i["pages"] if i["pages"] is not None else "-", fill, progs or "-"))
        if i["error"]:
            rows[-1] = rows[-1][:5] + (f"error: {i['error']}",)
    if rows:
        print(_table(("name", "pid", "alive", "pages", "fill (bytes)", "programs"), rows))
    else:
        print("no stores")
    return 0


def _dump(args) -> int:
    from . import deploy
    with _open(args, readonly=True) as store:
        manifest = deploy.manifest_of(store)
        by_id = manifest.by_id if manifest else {}
        entries = []
        for kid in sorted(store.keys()):
            spec = by_id.get(kid)
            raw = store.get(kid)
            slot = store.slot(kid)
            e = _value_json(store, kid, spec, raw)
            e["place"] = f"{slot.page}:{slot.offset}"
            e["shown"] = spec.format(raw) if spec else (raw.hex() if len(raw) <= 16 else raw[:16].hex() + "...")
            entries.append(e)
        missing = [k.name for k in (manifest.keys if manifest else ()) if k.id not in store]
        state = store.state
        links = deploy.links(store)
    if args.json:
        for e in entries:
            e.pop("shown")
        _emit_json({"store": args.name, "target": state["target"], "manifest": manifest.source if manifest else None,
                    "keys": entries, "missing": missing, "links": links})
        return 0
    print(f"store {args.name}: target pid {state['target']['pid']}, manifest "
          f"{manifest.source if manifest else '-'}, programs "
          f"{', '.join(r['program'] for r in links) or '-'}")
    print(_table(("key", "name", "size", "type", "page:off", "value"),
                 [(e["key"], e["name"] or "-", e["size"], e["type"] or "-", e["place"], e["shown"]) for e in entries]))
    if missing:
        print(f"missing (in the manifest, not in the store): {', '.join(missing)}")
    return 0


def _links_out(args, links: list, verb: str) -> None:
    if args.json:
        _emit_json({"store": args.name, verb: links})
    elif links:
        print(_table(("program", "pin", "pinned", "object"),
                     [(r["program"], r["pin"], "yes" if r["pinned"] else "no", r["object"]) for r in links]))
    else:
        print(f"store {args.name}: no programs {verb}")


def _attach(args) -> int:
    from . import deploy
    with _open(args) as store:
        links = deploy.attach(store, args.object, programs=args.program or None)
    _links_out(args, links, "attached")
    return 0


def _detach(args) -> int:
    from . import deploy
    with _open(args) as store:
        links = deploy.detach(store)
    _links_out(args, links, "detached")
    return 0


def _links(args) -> int:
    from . import deploy
    with _open(args, readonly=True) as store:
        links = deploy.links(store)
    _links_out(args, links, "attached")
    return 0


def _unfinished(d) -> dict:
    """What a creator killed before its state file left to undo: the map pin it made."""
    from .named import NEW_PIN
    try:
        with open(d.file(NEW_PIN), encoding="utf-8") as f:
            pin = f.read().strip()
    except FileNotFoundError:
        return {}
    return {"name": d.name, "map": {"pin": pin}, "pin_root": os.path.dirname(os.path.dirname(pin))}


def _remove_store(name: str, *, unless_alive: bool) -> bool:
    """Remove a store whose target is gone (its element went with the task): pins and files.
    Decided under the root's lock and the store's writer lock, on the state read there;
    with unless_alive, a store whose target lives is left (False)."""
    from . import deploy
    from .named import STATE, StoreDir, Target, root_lock
    d = StoreDir(name)
    d.check_root()              # never delete in a root that is not ours, private and on tmpfs
    with root_lock():           # a creator holds it from mkdir to its state file
        d.check()               # nor in a store directory someone else could have changed
        d.lock()                # StoreBusyError while a process has it open for writing
        try:
            # No state file here means a creator that died before writing it.  A state file
            # that cannot be read (corrupt, a newer format) raises: the store is kept.
            state = d.read_state() if os.path.exists(d.file(STATE)) else _unfinished(d)
            if unless_alive and "target" in state and Target(**state["target"]).alive():
                return False
            deploy.remove_links(state)
            d.remove()
            deploy.drop_map_pin(state)
        finally:
            d.unlock()
    return True


def _destroy(args) -> int:
    from . import deploy
    from .errors import MapGoneError, TargetGoneError
    try:
        store = _open(args)
    except (TargetGoneError, MapGoneError):     # the element went with the task or the map
        _remove_store(args.name, unless_alive=False)
    else:
        with store:
            deploy.detach(store)
            state = store.state
            store.destroy()
        deploy.drop_map_pin(state)
    if args.json:
        _emit_json({"destroyed": args.name})
    else:
        print(f"destroyed store {args.name}")
    return 0


def _gc(args) -> int:
    from .errors import StoreAccessError, StoreBusyError, StoreStateError
    from .named import StoreDir, Target, list_names, runtime_root
    removed, kept = [], []
    if os.path.isdir(runtime_root()):
        StoreDir("_", None).check_root()         # a wrong --root deletes nothing
    for name in list_names():
        d = StoreDir(name)
        try:
            d.check()
            state = d.read_state()
        except StoreStateError:
            state = None            # no state file: removed below unless its creator holds the lock
        except StoreAccessError as exc:
            kept.append({"name": name, "reason": _message(exc)})
            continue
        except FileNotFoundError:
            continue                # removed meanwhile (another gc or a destroy)
        if state is not None and Target(**state["target"]).alive():
            continue
        try:
            if _remove_store(name, unless_alive=True):
                removed.append(name)
        except (StoreBusyError, StoreAccessError, StoreStateError) as exc:
            kept.append({"name": name, "reason": _message(exc)})
        except FileNotFoundError:
            continue
    if args.json:
        _emit_json({"removed": removed, "busy": kept})
    else:
        for name in removed:
            print(f"removed store {name}")
        for k in kept:
            print(f"kept store {k['name']}: {k['reason']}")
        if not removed and not kept:
            print("nothing to remove")
    return 0


def _rollout(args) -> int:
    from . import deploy
    from .manifest import load_manifest
    new = load_manifest(os.path.abspath(args.manifest) if args.manifest else None, args.object)
    with _open(args, readonly=args.dry_run) as store:
        if not args.dry_run:
            store.reclaim()     # free space a writer's open quarantined: the plan counts it free
        p = deploy.plan(store, new, readonly=args.dry_run)
        if args.dry_run:
            if args.json:
                _emit_json({"dry_run": True, **_plan_json(p)})
            else:
                print(p)
                print("dry run: nothing changed")
            return 0
        d = deploy.rollout(store, args.object, new)
        links = deploy.links(store)
    t = d.switch
    times = {"unavailable_ms": t.unavailable * 1e3, "both_attached_ms": t.both_attached * 1e3,
             "grace_ms": t.grace * 1e3, "keys_converted": t.keys} if t else {}
    if args.json:
        _emit_json({"dry_run": False, **_plan_json(p), "switch": times, "links": links})
    else:
        print(p)
        print(f"rolled out {args.object}: programs {', '.join(r['program'] for r in links)}"
              + (f"; both versions attached {times['both_attached_ms']:.1f} ms, "
                 f"{t.keys} key(s) unavailable {times['unavailable_ms']:.1f} ms" if t else ""))
    return 0


def _message(exc: BaseException) -> str:
    """One line for an error."""
    from ._libbpf import LibbpfError
    if isinstance(exc, LibbpfError):
        text = f"{exc.strerror}"
    elif isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(exc, LibbpfError) and len(lines) > 1:
        return lines[0] + " (UPTRKV_DEBUG=1 shows the rest)"
    return "; ".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse; under --json a usage error is also printed as JSON on stdout, so that a
    script reading JSON sees it (exit 2 and the usage text on stderr unchanged)."""

    json_errors = False

    def error(self, message):
        if _Parser.json_errors:
            _emit_json({"error": message, "kind": "usage"})
        super().error(message)


def main(argv: list[str] | None = None) -> int:
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    common = _Parser(add_help=False, allow_abbrev=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of a table")
    common.add_argument("--root", default=argparse.SUPPRESS,
                        help="directory of named stores, on tmpfs (default: $UPTRKV_ROOT, or /run/uptrkv, or /dev/shm/uptrkv where /run is not tmpfs)")
    common.add_argument("--bpffs", default=argparse.SUPPRESS,
                        help="bpffs directory for map and link pins (default: $UPTRKV_BPFFS or /sys/fs/bpf/uptrkv)")
    parser = _Parser(prog="uptrkv", description=__doc__, parents=[common], allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help):
        p = sub.add_parser(name, help=help, parents=[common], allow_abbrev=False)
        p.set_defaults(func=func)
        return p

    p = add("demo", _demo, "run the demo program on tp_btf/sys_enter and print the store")
    p.add_argument("--calls", type=int, default=25, help="syscalls to make while attached")
    p.add_argument("--copy-path", choices=("auto", "stock", "dynptr"), default=None)
    add("check", _check, "probe the kernel for uptr and dynptr-over-uptr support "
        f"(exit {EXIT_UNSUPPORTED}: this kernel cannot host a store)")
    p = add("layout", _layout, "print the store layout read from an object's BTF")
    p.add_argument("object")
    p = sub.add_parser("manifest", help="validate a manifest or generate KV_KEY() lines from it",
                       parents=[common], allow_abbrev=False)
    msub = p.add_subparsers(dest="manifest_command", required=True)
    q = msub.add_parser("check", help="validate a TOML manifest and/or an object's embedded one",
                        parents=[common], allow_abbrev=False)
    q.add_argument("toml", nargs="?")
    q.add_argument("--object", help="BPF object whose .uptrkv.manifest must agree")
    q.set_defaults(func=_manifest_check)
    q = msub.add_parser("header", help="print KV_KEY() declarations for a TOML manifest", parents=[common], allow_abbrev=False)
    q.add_argument("toml")
    q.set_defaults(func=_manifest_header)
    p = add("plan", _plan, "diff two manifests: keys kept, added, removed, resized")
    p.add_argument("old")
    p.add_argument("new")

    p = add("create", _create, "create a named store for a process (prints its name)")
    p.add_argument("--pid", type=int, required=True, help="the process whose programs use the store")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--object", help="BPF object with the kv_store_map (its maps are created and pinned)")
    src.add_argument("--map", help="a kv_store_map pinned on bpffs by any loader")
    p.add_argument("--manifest", help="TOML manifest (default with --object: the one embedded in it)")
    p.add_argument("--name", dest="store_name", help="store name (default: program name or object, and pid)")
    p = add("seed", _seed, "write values from a TOML file (name = value, top level or in [values])")
    p.add_argument("name")
    p.add_argument("file")
    p = add("get", _get, "print a key's value (KEY: id or manifest name)")
    p.add_argument("name")
    p.add_argument("key")
    p = add("put", _put, "write a key (VALUE typed by the manifest; raw hex for untyped keys)")
    p.add_argument("name")
    p.add_argument("key")
    p.add_argument("value")
    p = add("delete", _delete, "delete a key")
    p.add_argument("name")
    p.add_argument("key")
    add("ls", _ls, "list stores: target, alive, pages, fill, attached programs")
    p = add("dump", _dump, "print every key of a store with its decoded value")
    p.add_argument("name")
    p = add("attach", _attach, "attach an object's programs to the store's target, pinned")
    p.add_argument("name")
    p.add_argument("object")
    p.add_argument("--program", action="append", help="attach only this program (repeatable)")
    p = add("detach", _detach, "unpin the store's programs and wait until they are gone")
    p.add_argument("name")
    p = add("links", _links, "list the store's pinned programs")
    p.add_argument("name")
    p = add("rollout", _rollout, "switch the attached version to a new object and manifest")
    p.add_argument("name")
    p.add_argument("object")
    p.add_argument("manifest", nargs="?", help="TOML manifest (default: the one embedded in the object)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the space check only")
    p = add("destroy", _destroy, "detach, delete the element and remove the store")
    p.add_argument("name")
    add("gc", _gc, "remove stores whose target exited (or whose pid was reused)")

    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    from .named import ROOT_ENV
    from .named_store import BPFFS_ENV
    if getattr(args, "root", None):
        os.environ[ROOT_ENV] = args.root
    if getattr(args, "bpffs", None):
        os.environ[BPFFS_ENV] = args.bpffs
    try:
        return args.func(args)
    except BrokenPipeError:                      # the reader of our output went away: say nothing
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    except (Exception, KeyboardInterrupt) as exc:   # one line, no traceback (UPTRKV_DEBUG=1: all)
        if os.environ.get("UPTRKV_DEBUG") == "1":
            import traceback
            traceback.print_exc()
        known = isinstance(exc, (UptrkvError, OSError, ValueError, KeyError))
        prefix = "" if known else f"{type(exc).__name__}: "
        print(f"uptrkv: error: {prefix}{_message(exc)}", file=sys.stderr)
        if args.json:
            _emit_json({"error": _message(exc), "kind": type(exc).__name__})
        return 1


if __name__ == "__main__":
    sys.exit(main())
