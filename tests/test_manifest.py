"""Manifests from TOML and from the object's section; bad ones are refused by name."""

from pathlib import Path

import pytest

from uptrkv.errors import ManifestError
from uptrkv.manifest import load_manifest, parse_manifest, read_object

pytestmark = pytest.mark.nokernel
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "rollout"

GOOD = """
[program]
name = "x"
version = 1

[[key]]
id = 1
name = "count"
size = 8
type = "u64"
init = 5

[[key]]
id = 2
name = "text"
size = 16
type = "str"
init = "hi"

[[key]]
id = 1023
name = "raw"
size = 4096
type = "bytes"
init = "00ff"
"""


def test_good_manifest():
    m = parse_manifest(GOOD, "good.toml")
    assert [k.id for k in m.keys] == [1, 2, 1023]
    assert m["count"].init == (5).to_bytes(8, "little")
    assert m["text"].initial() == b"hi" + bytes(14)
    assert m["raw"].initial()[:2] == b"\x00\xff" and len(m["raw"].initial()) == 4096
    assert m.program == {"name": "x", "version": 1}
    assert m["count"].format(m["count"].initial()) == "5"
    assert "KV_KEY(text, 2, char[16]);" in m.c_header()


def key(body: str) -> str:
    return "[[key]]\nid = 1\nname = \"a\"\nsize = 8\n\n[[key]]\n" + body


@pytest.mark.parametrize("body, message", [
    ('id = 1\nname = "b"\nsize = 8\n', r"key #2 'b' \(line 6\): duplicate id 1"),
    ('id = 2\nname = "a"\nsize = 8\n', r"key #2 'a' \(line 6\): duplicate name 'a'"),
    ('id = 1024\nname = "b"\nsize = 8\n', r"key #2 'b' \(line 6\): id 1024 is outside 0..1023"),
    ('id = -1\nname = "b"\nsize = 8\n', "id -1 is outside"),
    ('id = 2\nname = "b"\nsize = 0\n', "size 0 is outside 1..4096"),
    ('id = 2\nname = "b"\nsize = 4097\n', "size 4097 is outside 1..4096"),
    ('id = 2\nname = "b"\nsize = 8\ncolour = "red"\n', "unknown field colour"),
    ('id = 2\nname = "b"\n', "missing size"),
    ('id = 2\nname = "no spaces"\nsize = 8\n', "must be a C identifier"),
    ('id = 2\nname = "b"\nsize = 4\ntype = "u64"\n', "type u64 is 8 bytes, size says 4"),
    ('id = 2\nname = "b"\nsize = 8\ntype = "float"\n', "type 'float' is not one of"),
    ('id = 2\nname = "b"\nsize = 1\ntype = "u8"\ninit = 256\n', "init 256 does not fit type u8"),
    ('id = 2\nname = "b"\nsize = 2\ntype = "str"\ninit = "abc"\n', "init is 3 bytes, the key holds 2"),
    ('id = 2\nname = "b"\nsize = 2\ntype = "bytes"\ninit = "zz"\n', "must be hex"),
])
def test_bad_manifests_name_the_key(body, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(key(body), "bad.toml")


def test_bad_toml_and_unknown_tables():
    with pytest.raises(ManifestError, match="bad.toml: not valid TOML"):
        parse_manifest("[[key]\n", "bad.toml")
    with pytest.raises(ManifestError, match="unknown table or field keys"):
        parse_manifest("[[keys]]\nid = 1\n", "bad.toml")
    with pytest.raises(ManifestError, match=r"\[program\] takes only"):
        parse_manifest("[program]\nauthor = 'me'\n", "bad.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "nope.toml")


def test_object_section_matches_toml():
    from uptrkv.objects import object_path
    for v in ("v1", "v2", "v3"):
        obj = object_path(f"rollout_{v}")
        embedded = read_object(obj)
        assert embedded is not None
        merged = load_manifest(EXAMPLES / f"{v}.toml", obj)
        assert {(k.id, k.name, k.size) for k in embedded.keys} == {(k.id, k.name, k.size) for k in merged.keys}
    assert read_object(object_path("rollout_v3")).by_id[3].size == 16     # sizeof(struct last_call)
    assert read_object(object_path("test_kv_ops")) is None


def test_section_and_file_disagreeing(tmp_path):
    from uptrkv.objects import object_path
    text = (EXAMPLES / "v2.toml").read_text().replace("size = 8\ntype = \"u64\"\ninit = 0", "size = 16\ntype = \"bytes\"")
    (tmp_path / "v2.toml").write_text(text)
    with pytest.raises(ManifestError, match="key id 4: .* says 'inherited' of 16 bytes, .* says 'inherited' of 8 bytes"):
        load_manifest(tmp_path / "v2.toml", object_path("rollout_v2"))
    with pytest.raises(ManifestError, match=r"v1.toml: key 'v1_only' \(id 1\) is not declared in .*rollout_v2"):
        load_manifest(EXAMPLES / "v1.toml", object_path("rollout_v2"))
    with pytest.raises(ManifestError, match=r"rollout_v1.bpf.o:.uptrkv.manifest: key 'v1_only' \(id 1\) is missing from"):
        load_manifest(EXAMPLES / "v2.toml", object_path("rollout_v1"))
