"""The ctypes NVENC binding matches Debian's nvEncodeAPI.h (API 11.1) byte for byte.

A C program compiled with gcc against the real header prints sizeof of every structure the
binding defines, offsetof of every field it names (and of the fields it sets inside nested
structures and unions), every version macro and enumerator it uses, and the bytes of every
GUID; each must equal the ctypes definition. No GPU is involved.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

from app.roi.nvenc import api
from tests.roi.nvenc.cbuild import HEADER, compile_c, require_toolchain


def _named_fields(struct: type) -> list[str]:
    return [name for name, *_ in struct._fields_ if not name.startswith("_")]


def _expected() -> dict[str, int | str]:
    """What the C program must print, keyed like its lines."""
    expected: dict[str, int | str] = {}
    for cname, struct in api.STRUCTS.items():
        expected[f"sizeof {cname}"] = ctypes.sizeof(struct)
        for field in _named_fields(struct):
            expected[f"offsetof {cname} {field}"] = getattr(struct, field).offset
    for cname, paths in api.NESTED_FIELDS.items():
        for path in paths:
            offset, struct = 0, api.STRUCTS[cname]
            for part in path.split("."):
                descriptor = getattr(struct, part)
                offset += descriptor.offset
                struct = dict((n, t) for n, t, *_ in struct._fields_)[part]
            expected[f"offsetof {cname} {path}"] = offset
    for name, value in api.CONSTANTS.items():
        expected[f"const {name}"] = value
    for name, guid in api.GUIDS.items():
        expected[f"guid {name}"] = bytes(guid).hex()
    return expected


def _program(keys: list[str]) -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <string.h>",
        "#include <ffnvcodec/nvEncodeAPI.h>",
        "static void guid(const char *name, const GUID *g) {",
        "  const unsigned char *p = (const unsigned char *)g;",
        '  printf("guid %s ", name);',
        '  for (size_t i = 0; i < sizeof *g; i++) printf("%02x", p[i]);',
        '  printf("\\n");',
        "}",
        "int main(void) {",
    ]
    for key in keys:
        kind, *rest = key.split(" ")
        if kind == "sizeof":
            lines.append(f'  printf("{key} %zu\\n", sizeof({rest[0]}));')
        elif kind == "offsetof":
            lines.append(f'  printf("{key} %zu\\n", offsetof({rest[0]}, {rest[1]}));')
        elif kind == "const":
            lines.append(f'  printf("{key} %lld\\n", (long long)({rest[0]}));')
        else:
            lines.append(f'  guid("{rest[0]}", &{rest[0]});')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


def test_ctypes_layout_matches_the_header(tmp_path: Path) -> None:
    expected = _expected()
    source = tmp_path / "layout.c"
    source.write_text(_program(list(expected)))
    binary = compile_c([source], tmp_path / "layout")
    printed = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    actual: dict[str, int | str] = {}
    for line in printed.splitlines():
        key, _, value = line.rpartition(" ")
        actual[key] = value if key.startswith("guid") else int(value)
    assert set(actual) == set(expected)
    mismatches = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
    assert not mismatches, f"binding (ctypes, header): {mismatches}"
    # The checks cover what the encoder depends on most.
    assert "offsetof NV_ENC_PIC_PARAMS qpDeltaMap" in actual
    assert "offsetof NV_ENC_CONFIG rcParams.qpMapMode" in actual
    assert len(expected) > 150


def test_status_names_cover_the_header() -> None:
    """Every NVENCSTATUS enumerator of the header has a name here (none left unexplained)."""
    require_toolchain()
    text = HEADER.read_text()
    block = text[text.index("typedef enum _NVENCSTATUS") : text.index("} NVENCSTATUS;")]
    names = [w.strip().rstrip(",") for w in block.split() if w.startswith("NV_ENC_")]
    names = [n for n in names if n.startswith(("NV_ENC_SUCCESS", "NV_ENC_ERR_")) and "::" not in n]
    declared = [n for n in dict.fromkeys(names) if n.replace("_", "").isalnum()]
    assert tuple(declared) == api.NVENCSTATUS_NAMES
