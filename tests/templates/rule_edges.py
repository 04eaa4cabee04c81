"""Every template rule at its edges: (field, value, accepted), shared by the rule and API tests."""

from __future__ import annotations

from typing import Any

import pytest

CHINESE_100 = "主播" * 50
NAME_EDGES: list[tuple[Any, bool]] = [
    ("", False),  # 0 characters
    ("a", True),  # 1
    ("Face1", True),
    ("abcde12345", True),  # 10
    ("abcde123456", False),  # 11
    ("0123456789", True),  # digits only
    ("café", False),  # non-ASCII letter
    ("名字", False),  # Chinese is not an ASCII letter
    ("ｆａｃｅ", False),  # full-width Latin letters
    ("ab_c", False),
    ("ab-c", False),
    ("ab c", False),
    ("a.b", False),
    ("a/b", False),
    ("abc\n", False),  # a trailing newline must not slip past an end-of-line anchor
    (" abc", False),
    ("😀", False),
    (123, False),  # a JSON number is not a name
    (None, False),
    (True, False),
]
DESCRIPTION_EDGES: list[tuple[Any, bool]] = [
    ("", True),
    ("主播人脸", True),  # Chinese
    ("Host face 主播 face_1-b", True),  # every allowed kind together
    (CHINESE_100, True),  # 100 characters
    (CHINESE_100 + "a", False),  # 101
    ("a" * 100, True),
    ("a" * 101, False),
    ("smile 😀", False),  # emoji
    ("a/b", False),
    ("v1.2", False),
    ("line\nbreak", False),
    ("tab\there", False),
    ("全角\u3000空格", False),  # ideographic space is not a space
    ("。", False),  # Chinese punctuation is not a Chinese character
    ("été", False),
    (42, False),
    (None, False),
]
MODEL_EDGES: list[tuple[Any, bool]] = [
    ("General", True),
    ("HonorOfKings", True),
    ("NBA2K", True),
    ("LiveShows", True),
    ("general", True),  # any case, stored in the model's own spelling
    ("LIVESHOWS", True),
    ("Live Shows", False),
    ("Faces", False),  # no such model in the catalogue
    ("", False),
    (1, False),
    (None, False),
]
# What the API stores for a model name given in another case.
CANONICAL_MODELS = {"general": "General", "LIVESHOWS": "LiveShows"}
# Names of the right shape that only the catalogue can refuse (the rule alone accepts them).
UNKNOWN_MODELS = {"Faces"}
DELTA_QP_EDGES: list[tuple[Any, bool]] = [
    (-52, False),
    (-51, True),
    (0, True),
    (51, True),
    (52, False),
    (-6.0, True),  # JSON 6.0 is the integer 6
    (-5.5, False),
    ("5", False),
    (True, False),
    (None, False),
]
MAX_REGIONS_EDGES: list[tuple[Any, bool]] = [
    (0, False),
    (1, True),
    (6, True),
    (7, False),
    ("3", False),
    (None, False),
]
BITRATE_EDGES: list[tuple[Any, bool]] = [
    (99, False),
    (100, True),
    (50000, True),
    (50001, False),
    (None, True),  # keep the publisher's bitrate
    (2500.0, True),
    ("2500", False),
    (-1, False),
    (False, False),
]

EDGES: dict[str, list[tuple[Any, bool]]] = {
    "name": NAME_EDGES,
    "description": DESCRIPTION_EDGES,
    "model": MODEL_EDGES,
    "delta_qp": DELTA_QP_EDGES,
    "max_regions": MAX_REGIONS_EDGES,
    "bitrate_kbps": BITRATE_EDGES,
}


def edge_params() -> list[Any]:
    return [
        pytest.param(field, value, ok, id=f"{field}={value!r}"[:60])
        for field, edges in EDGES.items()
        for value, ok in edges
    ]
