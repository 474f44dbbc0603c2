"""Manifests: every key a program version uses, from TOML and from the object.

A TOML manifest::

    [program]              # optional
    name = "demo"
    version = 2

    [[key]]
    id = 1                 # 0..1023, what BPF uses
    name = "syscalls"      # unique, a C identifier
    size = 8               # 1..4096 bytes
    type = "u64"           # optional: u8..u64, i8..i64, str, bytes
    init = 0               # optional initial value (int, string, or hex for bytes)

The BPF side declares the same keys with ``KV_KEY(name, id, type)`` from
``kv_store.h``, which gives a compile-time constant ``KV_KEY_name`` and
records ``{id, sizeof(type), name, type}`` in the object's
``.uptrkv.manifest`` section.  :func:`load_manifest` reads both and refuses
them unless they agree.
"""

from __future__ import annotations

import re
import struct
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidValueError, ManifestError

MAX_KEYS = 1024
MAX_VALUE_SIZE = 4096
SECTION = ".uptrkv.manifest"

INT_TYPES = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q",
             "i8": "<b", "i16": "<h", "i32": "<i", "i64": "<q"}
TYPES = set(INT_TYPES) | {"str", "bytes"}
# C spellings KV_KEY() may record, mapped to manifest types
C_TYPES = {f"__{s}{n}": f"{m}{n}" for s, m in (("u", "u"), ("s", "i")) for n in (8, 16, 32, 64)}
C_TYPES.update({f"{m}{n}": f"{m}{n}" for m in ("u", "i") for n in (8, 16, 32, 64)})
C_TYPES.update({f"uint{n}_t": f"u{n}" for n in (8, 16, 32, 64)})
C_TYPES.update({f"int{n}_t": f"i{n}" for n in (8, 16, 32, 64)})
KEY_FIELDS = {"id", "name", "size", "type", "init"}
PROGRAM_FIELDS = {"name", "version", "object"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class KeySpec:
    id: int
    name: str
    size: int
    type: str | None = None
    init: bytes | None = None

    def initial(self) -> bytes:
        return self.init if self.init is not None else bytes(self.size)

    def format(self, raw: bytes) -> str:
        """A value for display, by type."""
        if self.type in INT_TYPES and len(raw) == self.size:
            return str(struct.unpack(INT_TYPES[self.type], raw)[0])
        if self.type == "str":
            return repr(raw.rstrip(b"\0").decode(errors="replace"))
        return raw.hex() if len(raw) <= 16 else raw[:16].hex() + f"... ({len(raw)} B)"

    def encode(self, value) -> bytes:
        """A value given by a user (TOML or the command line) as the key's bytes, by type.

        Integers: int, or a string in decimal or 0x hex, range-checked for the
        type.  ``str``: text, UTF-8, NUL-padded to the size.  ``bytes`` and
        untyped keys: a hex string or a list of ints 0..255, zero-padded.
        InvalidValueError names the key and what is wrong."""
        where = f"key {self.name!r} (id {self.id}, {self.type or 'untyped'}, {self.size} bytes)"
        if self.type in INT_TYPES:
            n = parse_int(value, where)
            bits = self.size * 8
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.type[0] == "i" else (0, (1 << bits) - 1)
            if not lo <= n <= hi:
                raise InvalidValueError(f"{where}: {n} is out of range {lo}..{hi}")
            return struct.pack(INT_TYPES[self.type], n)
        if self.type == "str":
            if not isinstance(value, str):
                raise InvalidValueError(f"{where}: expected a string, got {value!r}")
            raw = value.encode()
            if b"\0" in raw:
                raise InvalidValueError(f"{where}: the string holds a NUL character")
        else:
            raw = parse_bytes(value, where)
        if len(raw) > self.size:
            raise InvalidValueError(f"{where}: the value is {len(raw)} bytes, the key holds {self.size}")
        return raw.ljust(self.size, b"\0")

    def decode(self, raw: bytes):
        """The key's bytes as a JSON-able value: int, str (type str) or hex (anything else)."""
        if self.type in INT_TYPES and len(raw) == self.size:
            return struct.unpack(INT_TYPES[self.type], raw)[0]
        if self.type == "str":
            return raw.split(b"\0", 1)[0].decode(errors="replace")
        return bytes(raw).hex()

    def to_dict(self) -> dict:
        d = {"id": self.id, "name": self.name, "size": self.size}
        if self.type is not None:
            d["type"] = self.type
        if self.init is not None:
            d["init"] = self.init.hex()
        return d


def parse_int(value, where: str) -> int:
    """An integer from an int or a string (decimal, or hex with 0x; an optional sign)."""
    if isinstance(value, bool):
        raise InvalidValueError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        try:
            if body[:2].lower() == "0x":
                return sign * int(body[2:], 16)
            if body.isdigit():
                return sign * int(body, 10)
        except ValueError:
            pass
    raise InvalidValueError(f"{where}: expected an integer (decimal or 0x hex), got {value!r}")


def parse_bytes(value, where: str) -> bytes:
    """Bytes from a hex string (spaces and a 0x prefix allowed) or a list of ints 0..255."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        text = value.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise InvalidValueError(f"{where}: {value!r} is not a hex string (two digits per byte)") from None
    if isinstance(value, list) and all(isinstance(b, int) and not isinstance(b, bool) for b in value):
        bad = [b for b in value if not 0 <= b <= 255]
        if bad:
            raise InvalidValueError(f"{where}: byte {bad[0]} is outside 0..255")
        return bytes(value)
    raise InvalidValueError(f"{where}: expected a hex string or a list of bytes, got {value!r}")


@dataclass(frozen=True)
class Manifest:
    keys: tuple[KeySpec, ...]
    source: str = "<manifest>"
    program: dict = field(default_factory=dict)

    @property
    def by_id(self) -> dict[int, KeySpec]:
        return {k.id: k for k in self.keys}

    @property
    def by_name(self) -> dict[str, KeySpec]:
        return {k.name: k for k in self.keys}

    def __getitem__(self, name: str) -> KeySpec:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"{self.source} has no key named {name!r}") from None

    def total_size(self) -> int:
        return sum(k.size for k in self.keys)

    def to_dict(self) -> dict:
        """JSON-able form (a named store records the manifest in force); from_dict() reads it."""
        return {"source": self.source, "program": dict(self.program),
                "keys": [k.to_dict() for k in self.keys]}

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        try:
            keys = tuple(KeySpec(int(k["id"]), str(k["name"]), int(k["size"]), k.get("type"),
                                 bytes.fromhex(k["init"]) if k.get("init") is not None else None)
                         for k in d["keys"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"a recorded manifest is not valid ({exc!r})") from None
        return cls(keys, str(d.get("source", "<recorded manifest>")), dict(d.get("program") or {}))

    def c_header(self) -> str:
        """KV_KEY() lines for a BPF program using this manifest."""
        out = [f"/* generated from {self.source} by `uptrkv manifest header` */"]
        for k in self.keys:
            out.append(f"KV_KEY({k.name}, {k.id}, {_c_type(k)});")
        return "\n".join(out) + "\n"


def _c_type(k: KeySpec) -> str:
    if k.type in INT_TYPES:
        return ("__s" if k.type.startswith("i") else "__u") + k.type[1:]
    return f"char[{k.size}]" if k.type == "str" else f"__u8[{k.size}]"


def _encode_init(value, ktype: str | None, size: int, where: str) -> bytes:
    if ktype in INT_TYPES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ManifestError(f"{where}: init must be an integer for type {ktype}")
        try:
            return struct.pack(INT_TYPES[ktype], value)
        except struct.error:
            raise ManifestError(f"{where}: init {value} does not fit type {ktype}") from None
    if isinstance(value, str) and ktype != "bytes":
        raw = value.encode()
    elif isinstance(value, str):
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ManifestError(f"{where}: init for bytes must be hex, got {value!r}") from None
    elif isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        raw = bytes(value)
    else:
        raise ManifestError(f"{where}: init must be a string, hex string or list of bytes")
    if len(raw) > size:
        raise ManifestError(f"{where}: init is {len(raw)} bytes, the key holds {size}")
    return raw.ljust(size, b"\0")


def _key_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*key\s*\]\]", line)]


def _check_keys(keys: list[KeySpec], where_of) -> None:
    seen_id: dict[int, int] = {}
    seen_name: dict[str, int] = {}
    for i, k in enumerate(keys):
        where = where_of(i, k)
        if k.id in seen_id:
            raise ManifestError(f"{where}: duplicate id {k.id} (also {where_of(seen_id[k.id], keys[seen_id[k.id]])})")
        if k.name in seen_name:
            raise ManifestError(f"{where}: duplicate name {k.name!r}")
        seen_id[k.id] = i
        seen_name[k.name] = i


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"program", "key"}
    if unknown:
        raise ManifestError(f"{source}: unknown table or field {', '.join(sorted(unknown))} "
                            "(expected [program] and [[key]])")
    program = doc.get("program", {})
    if not isinstance(program, dict) or set(program) - PROGRAM_FIELDS:
        raise ManifestError(f"{source}: [program] takes only {', '.join(sorted(PROGRAM_FIELDS))}")
    raw_keys = doc.get("key", [])
    if not isinstance(raw_keys, list):
        raise ManifestError(f"{source}: keys are [[key]] tables")
    lines = _key_lines(text)

    def where_of(i, k=None):
        line = f" (line {lines[i]})" if i < len(lines) else ""
        name = f" {k.name!r}" if isinstance(k, KeySpec) else (
            f" {k.get('name')!r}" if isinstance(k, dict) and "name" in k else "")
        return f"{source}: key #{i + 1}{name}{line}"

    keys = []
    for i, entry in enumerate(raw_keys):
        where = where_of(i, entry)
        extra = set(entry) - KEY_FIELDS
        if extra:
            raise ManifestError(f"{where}: unknown field {', '.join(sorted(extra))} "
                                f"(allowed: {', '.join(sorted(KEY_FIELDS))})")
        for req in ("id", "name", "size"):
            if req not in entry:
                raise ManifestError(f"{where}: missing {req}")
        kid, name, size, ktype = entry["id"], entry["name"], entry["size"], entry.get("type")
        if not isinstance(kid, int) or isinstance(kid, bool) or not 0 <= kid < MAX_KEYS:
            raise ManifestError(f"{where}: id {kid!r} is outside 0..{MAX_KEYS - 1}")
        if not isinstance(name, str) or not _IDENT.match(name):
            raise ManifestError(f"{where}: name {name!r} must be a C identifier")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_VALUE_SIZE:
            raise ManifestError(f"{where}: size {size!r} is outside 1..{MAX_VALUE_SIZE}")
        if ktype is not None and ktype not in TYPES:
            raise ManifestError(f"{where}: type {ktype!r} is not one of {', '.join(sorted(TYPES))}")
        if ktype in INT_TYPES and struct.calcsize(INT_TYPES[ktype]) != size:
            raise ManifestError(f"{where}: type {ktype} is {struct.calcsize(INT_TYPES[ktype])} bytes, size says {size}")
        init = _encode_init(entry["init"], ktype, size, where) if "init" in entry else None
        keys.append(KeySpec(kid, name, size, ktype, init))
    _check_keys(keys, where_of)
    return Manifest(tuple(keys), source, dict(program))


def read_toml(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    return parse_manifest(text, str(path))


def read_object(path: str | Path) -> Manifest | None:
    """The manifest KV_KEY() embedded in a BPF object, or None if it has none."""
    from elftools.elf.elffile import ELFFile   # here: the ops commands that need no object skip its import
    from .loader import BpfObject
    path = Path(path)
    with open(path, "rb") as f:
        section = ELFFile(f).get_section_by_name(SECTION)
        data = section.data() if section is not None else None
    if data is None:
        return None
    with BpfObject(path) as obj:
        rec = obj.btf.struct("kv_manifest_entry")
    if rec is None:
        raise ManifestError(f"{path}: has a {SECTION} section but no struct kv_manifest_entry in BTF")
    m = rec.members
    keys = []
    for off in range(0, len(data) - rec.size + 1, rec.size):
        blob = data[off:off + rec.size]

        def field_bytes(name):
            return blob[m[name].offset:m[name].offset + m[name].size]
        kid = int.from_bytes(field_bytes("id"), "little")
        size = int.from_bytes(field_bytes("size"), "little")
        name = field_bytes("name").split(b"\0")[0].decode()
        ctype = field_bytes("type").split(b"\0")[0].decode()
        keys.append(KeySpec(kid, name, size, C_TYPES.get(ctype.replace(" ", ""), None)))
    keys.sort(key=lambda k: k.id)
    _check_keys(keys, lambda i, k: f"{path}: {SECTION} key {k.name!r} (id {k.id})")
    return Manifest(tuple(keys), f"{path}:{SECTION}")


def load_manifest(toml_path: str | Path | None = None, object_path: str | Path | None = None) -> Manifest:
    """The manifest of a program version from its TOML file, its object, or both (which must agree)."""
    toml = read_toml(toml_path) if toml_path is not None else None
    embedded = read_object(object_path) if object_path is not None else None
    if toml is None and embedded is None:
        raise ManifestError(f"no manifest: give a TOML file or an object with KV_KEY() declarations"
                            + (f" ({object_path} has no {SECTION} section)" if object_path else ""))
    if toml is None or embedded is None:
        return toml or embedded
    a, b = toml.by_id, embedded.by_id
    for kid in sorted(set(a) | set(b)):
        if kid not in b:
            raise ManifestError(f"{toml.source}: key {a[kid].name!r} (id {kid}) is not declared in {embedded.source}")
        if kid not in a:
            raise ManifestError(f"{embedded.source}: key {b[kid].name!r} (id {kid}) is missing from {toml.source}")
        x, y = a[kid], b[kid]
        if x.name != y.name or x.size != y.size:
            raise ManifestError(f"key id {kid}: {toml.source} says {x.name!r} of {x.size} bytes, "
                                f"{embedded.source} says {y.name!r} of {y.size} bytes")
        if x.type in INT_TYPES and y.type in INT_TYPES and x.type != y.type:
            raise ManifestError(f"key {x.name!r}: type {x.type} in {toml.source}, {y.type} in {embedded.source}")
    return toml
