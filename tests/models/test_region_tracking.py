"""Detections to regions: the 6-region and 1/5-area rules, ranking, tracking, scheduling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.roi.detect import Detection, LabelPolicy, RankingPolicy, load_model
from app.roi.regions import Region
from app.roi.scheduling import DetectionScheduler
from app.roi.track import (
    RegionTracker,
    fit_regions,
    label_qp,
    merge_near,
    prepare_detections,
)

W, H = 1280, 720
RANKING = RankingPolicy(
    labels={
        "face": LabelPolicy(priority=0, qp_weight=1.0, pad=0.0),
        "person": LabelPolicy(priority=1, qp_weight=0.5, pad=0.0),
        "text": LabelPolicy(priority=2, qp_weight=0.5, pad=0.0, merge_gap=0.6),
        "rigid": LabelPolicy(priority=3, pad=0.0, shrink=False),
    }
)


def det(x0: float, y0: float, x1: float, y1: float, label: str = "face", score: float = 0.9):
    return Detection((x0, y0, x1, y1), label, score)


def total_area(regions: list[Region]) -> int:
    return sum(r.area for r in regions)


boxes = st.builds(
    lambda x, y, w, h, label, score: det(x, y, x + w, y + h, label, score),
    st.integers(-50, W),
    st.integers(-50, H),
    st.integers(1, W),
    st.integers(1, H),
    st.sampled_from(["face", "person", "text", "rigid", "unknown"]),
    st.floats(0.05, 1.0),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(boxes, max_size=20), st.integers(1, 6), st.integers(-51, 51))
def test_fitted_regions_obey_six_regions_and_a_fifth_of_the_area(found, max_regions, delta_qp):
    tracker = RegionTracker(RANKING, delta_qp=delta_qp, max_regions=max_regions)
    regions = tracker.update(found, W, H)
    assert len(regions) <= max_regions <= 6
    assert total_area(regions) * 5 <= W * H
    for r in regions:
        assert 0 <= r.left < r.right <= W and 0 <= r.top < r.bottom <= H
        assert -51 <= r.qp <= 0
        # Whole 16x16 blocks (the picture's edge counts as a block edge).
        assert r.left % 16 == 0 and r.top % 16 == 0
        assert r.right % 16 == 0 or r.right == W
        assert r.bottom % 16 == 0 or r.bottom == H


def test_more_than_six_faces_keep_the_six_most_prominent() -> None:
    found = [det(20 + i * 150, 300, 60 + i * 150, 340) for i in range(8)]
    found.append(det(600, 200, 700, 300, score=0.99))  # the biggest, near the centre
    regions = fit_regions(
        RegionTracker(RANKING).rank(found, W, H), RANKING, -6, W, H, max_regions=6
    )
    assert len(regions) == 6
    assert (regions[0].left, regions[0].top) == (592, 192)  # the blocks under (600, 200)


def test_faces_go_before_people_and_text() -> None:
    found = [
        det(0, 500, 300, 560, "text"),
        det(400, 100, 800, 700, "person"),
        det(500, 150, 600, 260, "face"),
    ]
    regions = RegionTracker(RANKING, delta_qp=-8).update(found, W, H)
    assert [r.label for r in regions][:2] == ["face", "person"]
    assert regions[0].qp == -8 and regions[1].qp == -4  # person weight 0.5


def test_a_region_over_the_budget_is_shrunk_not_dropped() -> None:
    big_person = det(100, 0, 900, 720, "person")  # 62 % of the picture
    regions = fit_regions([big_person], RANKING, -6, W, H)
    assert len(regions) == 1
    r = regions[0]
    assert total_area(regions) * 5 <= W * H
    assert total_area(regions) * 5 >= 0.85 * W * H  # uses nearly all of the budget
    # Centred on the person, within the 16-pixel block grid.
    assert abs((r.left + r.right) / 2 - 500) <= 8 and abs((r.top + r.bottom) / 2 - 360) <= 8


def test_a_region_that_may_not_shrink_is_skipped_and_smaller_ones_still_fit() -> None:
    found = [det(0, 0, 800, 720, "rigid"), det(1000, 10, 1100, 110, "rigid")]
    regions = fit_regions(found, RANKING, -6, W, H)
    assert [(r.left, r.top, r.right, r.bottom) for r in regions] == [(992, 0, 1104, 112)]


def test_label_qp_scales_and_stays_a_quality_gain() -> None:
    policy = LabelPolicy(qp_weight=0.5)
    assert label_qp(-10, policy) == -5
    assert label_qp(-51, LabelPolicy(qp_weight=2.0)) == -51
    assert label_qp(6, policy) == 0


def test_words_on_a_line_merge_into_one_region() -> None:
    words = [det(100 + i * 90, 600, 180 + i * 90, 630, "text") for i in range(4)]
    merged = prepare_detections(words, RANKING, W, H)
    assert len(merged) == 1
    assert merged[0].box == (100, 600, 450, 630)
    boxes, _ = merge_near(np.array([[0, 0, 10, 10], [100, 0, 110, 10]], float), np.ones(2), 0.6)
    assert len(boxes) == 2  # far apart: not merged


def test_liveshows_ranks_the_host_face_then_the_upper_body() -> None:
    model = load_model("LiveShows")
    guest = det(50, 50, 110, 120)
    host = det(580, 150, 700, 290)
    found = [guest, host]
    found += model.derived[0].apply(found, W, H)
    regions = RegionTracker(model, delta_qp=-6).update(found, W, H)
    assert [r.label for r in regions] == ["face", "upper_body"]
    face = regions[0]
    assert face.left < 580 < 700 < face.right  # padded host face, not the guest
    assert regions[1].qp == -3  # upper body weight 0.5


def test_a_missed_detection_is_held_then_dropped() -> None:
    tracker = RegionTracker(RANKING, hold_frames=5, max_misses=1)
    face = [det(600, 300, 700, 400)]
    assert len(tracker.update(face, W, H)) == 1
    for _ in range(5):
        assert len(tracker.update([], W, H)) == 1  # an empty pass: held
    assert tracker.update([], W, H) == []


def test_hold_covers_the_detection_interval() -> None:
    tracker = RegionTracker(RANKING, hold_frames=2, max_misses=1)
    face = [det(600, 300, 700, 400)]
    for _ in range(3):  # detection every 6 frames
        tracker.update(face, W, H)
        for _ in range(5):
            assert len(tracker.update(None, W, H)) == 1
    assert len(tracker.update([], W, H)) == 1  # one missed pass is not enough to drop it
    for _ in range(5):
        assert len(tracker.update(None, W, H)) == 1
    assert tracker.update([], W, H) == []  # the second missed pass is


def test_a_stalled_detector_does_not_hold_regions_forever() -> None:
    tracker = RegionTracker(RANKING, max_age_frames=30)
    tracker.update([det(600, 300, 700, 400)], W, H)
    for _ in range(30):
        assert tracker.update(None, W, H)
    assert tracker.update(None, W, H) == []


def test_jittery_detections_are_smoothed() -> None:
    rng = np.random.default_rng(0)
    tracker = RegionTracker(RANKING, smoothing=0.6)
    raw, out = [], []
    for _ in range(60):
        jitter = rng.normal(0, 6, 2)
        x0, y0 = 600 + jitter[0], 300 + jitter[1]
        raw.append(x0)
        regions = tracker.update([det(x0, y0, x0 + 100, y0 + 100)], W, H)
        out.append(regions[0].left)
    assert np.std(np.diff(out[10:])) < 0.6 * np.std(np.diff(raw[10:]))


def test_regions_follow_motion_between_detections() -> None:
    tracker = RegionTracker(RANKING, smoothing=0.3)
    x = 100.0
    for frame in range(60):
        x += 5  # 5 px a frame to the right
        found = [det(x, 300, x + 80, 380)] if frame % 4 == 0 else None
        regions = tracker.update(found, W, H)
    # Three frames after the last detection the region has moved on with the face: it still
    # holds the face, give or take a few pixels of prediction error.
    assert regions
    assert regions[0].left <= x + 4 and regions[0].right >= x + 80 - 4
    assert regions[0].left > x - 32


def test_a_new_object_gets_its_own_track_and_labels_do_not_mix() -> None:
    tracker = RegionTracker(RANKING)
    tracker.update([det(100, 100, 200, 200)], W, H)
    regions = tracker.update([det(100, 100, 200, 200), det(110, 110, 210, 210, "person")], W, H)
    assert sorted(r.label for r in regions) == ["face", "person"]
    assert len(tracker.tracks) == 2


def test_scheduler_adapts_n_to_the_detect_time() -> None:
    scheduler = DetectionScheduler(fps=30, core_share=0.5)
    assert scheduler.every == 1
    scheduler.record(0.012)  # 12 ms < 16.7 ms allowance: every frame
    assert scheduler.every == 1
    for _ in range(10):
        scheduler.record(0.060)  # 60 ms: every 4th frame
    assert scheduler.every == 4
    pattern = [scheduler.should_detect() for _ in range(12)]
    assert pattern.count(True) == 3
    for _ in range(30):
        scheduler.record(0.045)  # 45 ms needs 3, but is not clearly below what 3 allow
    assert scheduler.every == 4
    for _ in range(30):
        scheduler.record(0.035)
    assert scheduler.every == 3
    for _ in range(30):
        scheduler.record(0.005)
    assert scheduler.every == 1
    scheduler.set_fps(60)
    for _ in range(10):
        scheduler.record(0.060)
    assert scheduler.every == 8


def test_scheduler_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        DetectionScheduler(fps=0)
    with pytest.raises(ValueError):
        DetectionScheduler(min_every=5, max_every=2)


def test_a_pass_is_settled_only_when_it_confirms_every_track() -> None:
    tracker = RegionTracker(RANKING, settled_error=0.08)
    face, person = det(600, 300, 700, 400), det(100, 100, 300, 500, "person")
    tracker.update([face], W, H)
    assert not tracker.settled  # a new object is news
    tracker.update(None, W, H)
    tracker.update([face], W, H)
    assert tracker.settled  # the same face where the track said it would be
    tracker.update([det(630, 300, 730, 400)], W, H)
    assert not tracker.settled  # moved 30 % of its size off the prediction
    tracker.update([det(630, 300, 730, 400)], W, H)
    tracker.update([det(630, 300, 730, 400), person], W, H)
    assert not tracker.settled  # someone came in
    tracker.update([person], W, H)
    assert not tracker.settled  # the face was missed
    tracker.update([], W, H)
    tracker.update([], W, H)
    assert not tracker.settled  # nothing to confirm


def test_settled_passes_stretch_the_interval_and_news_restores_it() -> None:
    scheduler = DetectionScheduler(fps=30, core_share=0.5, settled_seconds=1.0)
    scheduler.record(0.060)  # 60 ms: every 4th frame from the budget
    assert scheduler.every == 4
    intervals = []
    for _ in range(5):
        scheduler.record(0.060, settled=True)
        intervals.append(scheduler.every)
    assert intervals == [8, 16, 30, 30, 30]  # doubling up to one second
    assert [scheduler.should_detect() for _ in range(30)].count(True) == 1
    scheduler.record(0.060, settled=False)
    assert scheduler.every == 4
    assert [scheduler.should_detect() for _ in range(8)].count(True) == 2  # at once, not later
    # A budget that already asks for more than a second is never shortened by settling.
    slow = DetectionScheduler(fps=30, core_share=0.05, max_every=60)
    for _ in range(3):
        slow.record(0.080, settled=True)
    assert slow.budget_every == 48 and slow.every == 48  # 80 ms / (5 % of 33 ms)


def test_a_region_is_the_blocks_its_box_touches() -> None:
    [r] = fit_regions([det(100.5, 37, 203, 150)], RANKING, -6, W, H)
    assert (r.left, r.top, r.right, r.bottom) == (96, 32, 208, 160)
    # 1080 is not a multiple of 16: the last, partial block row ends at the picture's edge.
    [r] = fit_regions([det(900, 1000, 1000, 1080)], RANKING, -6, 1920, 1080)
    assert (r.left, r.top, r.right, r.bottom) == (896, 992, 1008, 1080)


def test_jitter_inside_the_deadband_does_not_move_the_region() -> None:
    tracker = RegionTracker(RANKING, smoothing=0.0, deadband=0.06)
    first = tracker.update([det(600, 300, 700, 400)], W, H)
    for dx in (5, -5, 4, -3):  # under 6 % of the 100-pixel box
        assert tracker.update([det(600 + dx, 300, 700 + dx, 400)], W, H) == first
    moved = tracker.update([det(630, 300, 730, 400)], W, H)
    assert moved[0].left == 624  # past the deadband: it follows


def test_a_region_inside_an_earlier_one_is_left_out() -> None:
    face, person = det(600, 200, 700, 300), det(610, 210, 690, 290, "person")
    regions = fit_regions([face, person], RANKING, -6, W, H)
    assert [r.label for r in regions] == ["face"]
