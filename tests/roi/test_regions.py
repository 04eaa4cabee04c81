"""Every rule of the ROI string (docs/roi-rules.md), as unit and property tests."""

from __future__ import annotations

import json
from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.roi.regions import (
    DEFAULT_DELTA_QP,
    MAX_REGIONS,
    MAX_STRING_BYTES,
    ROI_REQUEST_RULE,
    Region,
    RoiJsonError,
    RoiState,
    check_roi_request,
    effective_regions,
    format_roi,
    is_explicit_clear,
    parse_roi,
    parse_roi_json,
    roi_json,
    truncate_roi_text,
    with_delta_qp,
)

W, H = 1280, 720


def rects(regions: list[Region]) -> list[tuple[int, int, int, int, int]]:
    return [(r.top, r.left, r.bottom, r.right, r.qp) for r in regions]


# --- syntax ---------------------------------------------------------------------------------


def test_parses_the_documented_example() -> None:
    assert rects(parse_roi("80,560-300,760=-6")) == [(80, 560, 300, 760, -6)]
    assert rects(parse_roi("1,2-3,4=-1;5,6-7,8=2")) == [(1, 2, 3, 4, -1), (5, 6, 7, 8, 2)]


def test_delta_qp_omitted_means_minus_three() -> None:
    assert DEFAULT_DELTA_QP == -3
    assert parse_roi("10,20-30,40")[0].qp == -3


def test_whitespace_and_trailing_semicolon_are_tolerated() -> None:
    assert rects(parse_roi(" 10 , 20 - 30 , 40 = -5 ;")) == [(10, 20, 30, 40, -5)]


def test_delta_qp_range_is_inclusive_and_out_of_range_region_is_dropped() -> None:
    assert parse_roi("0,0-16,16=-51")[0].qp == -51
    assert parse_roi("0,0-16,16=51")[0].qp == 51
    assert parse_roi("0,0-16,16=-52") == []
    assert parse_roi("0,0-16,16=52") == []
    # Only the bad region goes; the others keep their place.
    assert rects(parse_roi("0,0-16,16=99;0,0-8,8=-2")) == [(0, 0, 8, 8, -2)]


@pytest.mark.parametrize(
    "text",
    [
        "1.5,2-3,4=-1",  # not an integer
        "1,2-3,4=-1.0",
        "1,2,3,4",
        "1,2-3",
        "a,b-c,d",
        "1,2-3,4==1",
        "1,2-3,4=",
        "٣,2-3,4",  # a non-ASCII digit is not an integer here
    ],
)
def test_malformed_parts_are_skipped(text: str) -> None:
    assert parse_roi(text) == []
    assert rects(parse_roi(f"{text};0,0-8,8")) == [(0, 0, 8, 8, -3)]


@pytest.mark.parametrize("text", ["", ";", ";;", "Clear", "clear;", "   "])
def test_strings_without_a_region_mean_normal_encoding(text: str) -> None:
    assert parse_roi(text) == []
    assert effective_regions(parse_roi(text), W, H) == []


def test_negative_coordinates_parse_and_are_clamped() -> None:
    (region,) = parse_roi("-10,-20-30,40=-4")
    assert rects([region]) == [(-10, -20, 30, 40, -4)]
    assert rects(effective_regions([region], W, H)) == [(0, 0, 30, 40, -4)]


def test_input_is_truncated_to_256_bytes_before_parsing() -> None:
    first = "0,0-10,10=-1;"
    filler = "x" * (MAX_STRING_BYTES - len(first) - 5)
    # The region after the filler starts inside the 256 bytes but ends beyond them.
    text = first + filler + ";0,0-20,20=-2"
    assert len(text.encode()) > MAX_STRING_BYTES
    assert rects(parse_roi(text)) == [(0, 0, 10, 10, -1)]
    # Cut exactly at the limit, the last region is whole and survives.
    exact = first + "y" * (MAX_STRING_BYTES - len(first) - len(";0,0-20,20=-2")) + ";0,0-20,20=-2"
    assert len(exact.encode()) == MAX_STRING_BYTES
    assert len(parse_roi(exact)) == 2
    assert len(parse_roi(exact + ";")) == 2


def test_truncation_counts_utf8_bytes_and_never_splits_a_character() -> None:
    text = "é" * 200  # 400 bytes
    cut = truncate_roi_text(text)
    assert len(cut.encode()) == MAX_STRING_BYTES
    assert cut == "é" * 128
    odd = "a" + "é" * 200
    assert len(truncate_roi_text(odd).encode()) == MAX_STRING_BYTES - 1


# --- picture rules --------------------------------------------------------------------------


def test_regions_are_clamped_to_the_picture() -> None:
    region = Region(top=700, left=1200, bottom=900, right=1500, qp=-6)
    assert rects(effective_regions([region], W, H)) == [(700, 1200, 720, 1280, -6)]


def test_regions_outside_or_empty_are_invalid() -> None:
    regions = [
        Region(800, 0, 900, 100),  # below the picture
        Region(10, 10, 10, 50),  # no height
        Region(10, 50, 20, 40),  # right before left
        Region(0, 0, 16, 16),
    ]
    assert rects(effective_regions(regions, W, H)) == [(0, 0, 16, 16, -3)]


def test_at_most_six_regions_extra_ones_ignored_in_order() -> None:
    regions = [Region(0, 10 * i, 10, 10 * i + 10, qp=-i) for i in range(9)]
    kept = effective_regions(regions, W, H)
    assert len(kept) == MAX_REGIONS == 6
    assert [r.qp for r in kept] == [0, -1, -2, -3, -4, -5]


def test_template_max_regions_is_honoured_and_capped_at_six() -> None:
    regions = [Region(0, 10 * i, 10, 10 * i + 10) for i in range(9)]
    assert len(effective_regions(regions, W, H, max_regions=2)) == 2
    assert len(effective_regions(regions, W, H, max_regions=50)) == 6


def test_invalid_regions_do_not_use_up_a_slot() -> None:
    regions = [Region(0, 0, 0, 0)] * 3 + [Region(0, 10 * i, 10, 10 * i + 10) for i in range(6)]
    assert len(effective_regions(regions, W, H)) == 6


def test_area_limit_is_one_fifth_inclusive() -> None:
    # 100 x 100 picture: limit 2000 pixels.
    exactly = Region(0, 0, 20, 100)  # 2000
    assert effective_regions([exactly], 100, 100) == [exactly]
    assert effective_regions([Region(0, 0, 21, 100)], 100, 100) == []


def test_area_accumulates_in_order_and_the_first_overflow_ends_the_list() -> None:
    big = Region(0, 0, 15, 100, qp=-1)  # 1500
    too_much = Region(50, 0, 60, 100, qp=-2)  # 1000: 2500 in total, over 2000
    small = Region(90, 0, 91, 10, qp=-3)  # 10: would fit on its own
    assert rects(effective_regions([big, too_much, small], 100, 100)) == rects([big])
    # In another order the small one counts first and the big one still fits.
    assert rects(effective_regions([small, big, too_much], 100, 100)) == rects([small, big])


def test_area_counts_the_clamped_rectangle() -> None:
    mostly_outside = Region(-1000, -1000, 10, 10)  # 100 pixels inside
    assert rects(effective_regions([mostly_outside], 100, 100)) == [(0, 0, 10, 10, -3)]


def test_overlapping_regions_keep_their_order_so_the_first_wins() -> None:
    first = Region(0, 0, 20, 20, qp=-10)
    second = Region(10, 10, 30, 30, qp=-2)
    assert effective_regions([first, second], W, H) == [first, second]
    assert format_roi(effective_regions([first, second], W, H)) == "0,0-20,20=-10;10,10-30,30=-2"


def test_zero_sized_picture_has_no_regions() -> None:
    assert effective_regions([Region(0, 0, 10, 10)], 0, 0) == []


def test_with_delta_qp_sets_the_template_delta() -> None:
    regions = with_delta_qp([Region(0, 0, 10, 10, label="face", score=0.5)], -6)
    assert regions == [Region(0, 0, 10, 10, -6, "face", 0.5)]


# --- reuse of the previous frame's regions --------------------------------------------------


def test_frame_without_roi_reuses_previous_regions() -> None:
    state = RoiState()
    assert state.update(None) == []  # normal before any ROI
    face = [Region(0, 0, 10, 10, -6)]
    assert state.update(face) == face
    assert state.update(None) == face
    assert state.update(None) == face
    assert state.update_text("Clear") == []
    assert state.update(None) == []
    assert state.update_text("1,1-5,5=-2") == [Region(1, 1, 5, 5, -2)]
    assert state.update_text(None) == [Region(1, 1, 5, 5, -2)]
    assert state.update_text(";") == []


def test_state_hands_out_copies() -> None:
    state = RoiState()
    state.update([Region(0, 0, 10, 10)])
    state.regions.clear()
    assert state.regions == [Region(0, 0, 10, 10)]


# --- formatter and JSON ---------------------------------------------------------------------


def test_format_writes_every_delta() -> None:
    assert format_roi([Region(80, 560, 300, 760, -6), Region(1, 2, 3, 4)]) == (
        "80,560-300,760=-6;1,2-3,4=-3"
    )
    assert format_roi([]) == ""


def test_roi_json_matches_design_example_exactly() -> None:
    text = roi_json(
        1234, 1280, 720, "roiface1", "LiveShows", [Region(80, 560, 300, 760, -6, "face", 0.934)]
    )
    assert text == (
        '{"pts":1234,"w":1280,"h":720,"template":"roiface1","model":"LiveShows",'
        '"roi":"80,560-300,760=-6","regions":[{"top":80,"left":560,"bottom":300,'
        '"right":760,"qp":-6,"label":"face","score":0.93}]}'
    )
    meta = parse_roi_json(text)
    assert meta.pts == 1234 and (meta.width, meta.height) == (1280, 720)
    assert meta.template == "roiface1" and meta.model == "LiveShows"
    assert meta.regions == (Region(80, 560, 300, 760, -6, "face", 0.93),)
    assert meta.roi == "80,560-300,760=-6"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[]", "object"),
        ("nope", "JSON"),
        ('{"pts":1,"w":1,"h":1,"template":"t","model":"m"}', "regions"),
        ('{"pts":"1","w":1,"h":1,"template":"t","model":"m","regions":[]}', "pts"),
        ('{"pts":1,"w":true,"h":1,"template":"t","model":"m","regions":[]}', "w"),
        ('{"pts":1,"w":1,"h":1,"template":5,"model":"m","regions":[]}', "template"),
        ('{"pts":1,"w":1,"h":1,"template":"t","model":"m","regions":[1]}', "regions[0]"),
        (
            '{"pts":1,"w":1,"h":1,"template":"t","model":"m","regions":[{"top":1}]}',
            "left",
        ),
    ],
)
def test_parse_roi_json_names_the_bad_field(text: str, field: str) -> None:
    with pytest.raises(RoiJsonError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_roi_json(text)


# --- properties -----------------------------------------------------------------------------

coords = st.integers(min_value=-2000, max_value=3000)
qps = st.integers(min_value=-51, max_value=51)
regions_st = st.builds(Region, coords, coords, coords, coords, qps)
sizes = st.tuples(st.integers(1, 1920), st.integers(1, 1080))


@given(st.lists(regions_st, max_size=10))
def test_format_then_parse_round_trips(regions: list[Region]) -> None:
    text = format_roi(regions)
    if len(text.encode()) <= MAX_STRING_BYTES:
        assert parse_roi(text) == regions


@given(st.lists(regions_st, max_size=12), sizes, st.integers(1, 6))
def test_effective_regions_obey_every_rule(
    regions: list[Region], size: tuple[int, int], max_regions: int
) -> None:
    width, height = size
    kept = effective_regions(regions, width, height, max_regions)
    assert len(kept) <= max_regions
    total = 0
    for region in kept:
        assert 0 <= region.top < region.bottom <= height
        assert 0 <= region.left < region.right <= width
        assert -51 <= region.qp <= 51
        total += region.area
    assert total * 5 <= width * height
    # Order is kept: each kept region is the clamped form of an input region, in input order.
    positions = []
    for region in kept:
        matches = [
            i
            for i, original in enumerate(regions)
            if original.qp == region.qp
            and min(max(original.top, 0), height) == region.top
            and min(max(original.left, 0), width) == region.left
            and min(max(original.bottom, 0), height) == region.bottom
            and min(max(original.right, 0), width) == region.right
            and (not positions or i > positions[-1])
        ]
        assert matches
        positions.append(matches[0])
    # Idempotent: the encoder may apply the rules again without changing anything.
    assert effective_regions(kept, width, height, max_regions) == kept


@given(st.lists(regions_st, max_size=12), sizes)
def test_kept_regions_are_the_longest_prefix_within_count_and_area(
    regions: list[Region], size: tuple[int, int]
) -> None:
    width, height = size
    # An independent model of the rules: clamp, drop empty, first six, area prefix.
    clamped = [
        Region(
            min(max(r.top, 0), height),
            min(max(r.left, 0), width),
            min(max(r.bottom, 0), height),
            min(max(r.right, 0), width),
            r.qp,
        )
        for r in regions
    ]
    candidates = [r for r in clamped if r.area > 0][:6]
    running = list(accumulate(r.area for r in candidates))
    expected = [
        r for r, total in zip(candidates, running, strict=True) if total * 5 <= width * height
    ]
    assert effective_regions(regions, width, height) == expected


@given(st.text(max_size=400))
def test_parser_never_raises_and_respects_limits(text: str) -> None:
    regions = parse_roi(text)
    assert all(-51 <= r.qp <= 51 for r in regions)
    assert len(regions) <= len(truncate_roi_text(text).split(";"))
    assert len(truncate_roi_text(text).encode()) <= MAX_STRING_BYTES


@given(
    st.integers(0, 10**9),
    sizes,
    st.text(max_size=10),
    st.lists(
        st.builds(
            Region,
            coords,
            coords,
            coords,
            coords,
            qps,
            st.text(max_size=8),
            st.floats(0, 1, allow_nan=False),
        ),
        max_size=6,
    ),
)
def test_roi_json_round_trips(
    pts: int, size: tuple[int, int], template: str, regions: list[Region]
) -> None:
    text = roi_json(pts, size[0], size[1], template, "General", regions)
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    meta = parse_roi_json(text)
    assert meta.pts == pts and (meta.width, meta.height) == size
    assert meta.template == template
    assert [(r.top, r.left, r.bottom, r.right, r.qp, r.label) for r in meta.regions] == [
        (r.top, r.left, r.bottom, r.right, r.qp, r.label) for r in regions
    ]
    assert all(
        abs(a.score - b.score) <= 0.005 + 1e-9 for a, b in zip(meta.regions, regions, strict=True)
    )
    assert parse_roi(meta.roi) == [Region(r.top, r.left, r.bottom, r.right, r.qp) for r in regions]


# --- what an application may send (REST) ---------------------------------------------------


@pytest.mark.parametrize("text", ["Clear", "clear", ";", "", " ; ;", "Clear;"])
def test_an_explicit_clear_is_accepted_and_means_no_regions(text: str) -> None:
    assert is_explicit_clear(text)
    assert check_roi_request(text) == []


@pytest.mark.parametrize("text", ["garbage", "10,20-50", "0,0-0,0", "1,2-3,4=-99", "Clear;junk"])
def test_a_string_with_no_valid_region_is_refused_with_the_rule(text: str) -> None:
    with pytest.raises(ValueError, match="no valid region") as caught:
        check_roi_request(text)
    assert str(caught.value) == ROI_REQUEST_RULE
    assert parse_roi(text) == [] or all(r.area == 0 for r in parse_roi(text))  # tolerant side


def test_one_valid_region_is_enough_and_malformed_parts_are_still_skipped() -> None:
    assert rects(check_roi_request("10,20-50,60=-10;0,0-0,0;garbage")) == [
        (10, 20, 50, 60, -10),
        (0, 0, 0, 0, DEFAULT_DELTA_QP),
    ]
