"""Each model on real and rendered pictures: finds what it should, nothing on flat frames."""

from __future__ import annotations

import numpy as np
import pytest

from app.roi.detect import Detection, RecognitionModel, box_iou, load_model, nms
from tests.data import scenes

MODELS = ("General", "LiveShows", "NBA2K", "HonorOfKings")


@pytest.fixture(scope="module")
def models() -> dict[str, RecognitionModel]:
    return {name: load_model(name) for name in MODELS}


def best_iou(found: list[Detection], label: str, truth: tuple[float, ...]) -> float:
    boxes = np.array([d.box for d in found if d.label == label], float).reshape(-1, 4)
    if not len(boxes):
        return 0.0
    return float(box_iou(np.array([truth], float), boxes).max())


def test_face_found_in_a_real_photo(models) -> None:
    frame = scenes.face_frames(1, seed=11)[0]
    assert frame.boxes["face"], "the scene must hold a face"
    found = models["General"].detect(frame.image)
    for face in frame.boxes["face"]:
        assert best_iou(found, "face", face) >= 0.5


def test_face_found_at_each_size_from_40_px(models) -> None:
    photo = scenes.load_image("astronaut.jpg")
    x0, y0, x1, _ = scenes.labels()["astronaut.jpg"]["face"][0]
    import cv2

    for face_width in (40, 64, 120, 220):
        scale = face_width / (x1 - x0)
        tile = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((720, 1280, 3), 90, np.uint8)
        canvas[100 : 100 + tile.shape[0], 200 : 200 + tile.shape[1]] = tile[:620, :1080]
        truth = tuple(
            v * scale + off
            for v, off in zip(
                scenes.labels()["astronaut.jpg"]["face"][0], (200, 100, 200, 100), strict=True
            )
        )
        found = models["General"].detect(canvas)
        assert best_iou(found, "face", truth) >= 0.5, face_width


@pytest.mark.parametrize("name", MODELS)
def test_nothing_on_flat_frames(models, name: str) -> None:
    model = models[name]
    model.reset()
    for value in (0, 128, 255):
        assert model.detect(np.full((720, 1280, 3), value, np.uint8)) == []


def test_liveshows_keeps_the_host_and_adds_the_upper_body(models) -> None:
    frame = scenes.face_frames(1, seed=11)[0]
    found = models["LiveShows"].detect(frame.image)
    faces = [d for d in found if d.label == "face"]
    bodies = [d for d in found if d.label == "upper_body"]
    assert faces and len(bodies) == 1
    # The upper body hangs below the largest face.
    host = max(faces, key=lambda d: d.width * d.height)
    body = bodies[0]
    assert body.box[1] == pytest.approx(host.box[1]) and body.box[3] > host.box[3]
    assert body.box[0] < host.box[0] < host.box[2] < body.box[2]


def test_general_finds_people_and_falls_back_to_saliency(models) -> None:
    general = models["General"]
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    canvas[100:612, 300:812] = scenes.load_image("astronaut.jpg")
    person = scenes.labels()["astronaut.jpg"]["person"][0]
    truth = (person[0] + 300, person[1] + 100, person[2] + 300, person[3] + 100)
    general.reset()
    assert best_iou(general.detect(canvas), "person", truth) >= 0.5
    # A picture with no face, person or text: the salient object stands in.
    canvas = np.full((720, 1280, 3), 40, np.uint8)
    canvas[300:420, 800:940] = (230, 200, 40)
    general.reset()
    found = general.detect(canvas)
    assert [d.label for d in found] == ["salient"]
    assert best_iou(found, "salient", (800, 300, 940, 420)) >= 0.3


def test_general_finds_on_screen_text(models) -> None:
    import cv2

    canvas = np.full((720, 1280, 3), 30, np.uint8)
    cv2.putText(
        canvas,
        "BREAKING NEWS 24/7",
        (300, 620),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.6,
        (255, 255, 255),
        3,
        cv2.LINE_AA,
    )
    models["General"].reset()
    found = [d for d in models["General"].detect(canvas) if d.label == "text"]
    assert found
    assert all(560 <= (d.box[1] + d.box[3]) / 2 <= 640 for d in found)


def test_nba2k_finds_ball_players_and_scoreboard(models) -> None:
    frame = scenes.court_frames(1, seed=3)[0]
    model = models["NBA2K"]
    model.reset()
    found = model.detect(frame.image)
    assert best_iou(found, "ball", frame.boxes["ball"][0]) >= 0.5
    assert any(best_iou(found, "player", p) >= 0.5 for p in frame.boxes["player"])
    words = [d for d in found if d.label == "scoreboard"]
    board = frame.boxes["scoreboard"][0]
    assert any(board[1] <= (d.box[1] + d.box[3]) / 2 <= board[3] for d in words)


def test_honorofkings_finds_heroes_not_minions_or_hud(models) -> None:
    frames = scenes.moba_frames(4, seed=5)
    model = models["HonorOfKings"]
    found_heroes = total = 0
    for frame in frames:
        found = model.detect(frame.image)
        for hero in frame.boxes.get("hero", []):
            total += 1
            found_heroes += best_iou(found, "hero", hero) >= 0.5
        # No detection away from every hero (minions, minimap dots, skill buttons).
        truth = np.array(frame.boxes.get("hero", []), float).reshape(-1, 4)
        for d in found:
            assert len(truth) and box_iou(np.array([d.box]), truth).max() > 0.2, d
    assert total >= 4 and found_heroes / total >= 0.75


def test_detect_batch_matches_single_frames(models) -> None:
    frames = [f.image for f in scenes.face_frames(2, seed=21)]
    model = models["General"]
    model.reset()
    batched = model.detect_batch(frames)
    singles = []
    for f in frames:
        model.reset()
        singles.append(model.detect(f))
    for b, s in zip(batched, singles, strict=True):
        assert [d.label for d in b] == [d.label for d in s]
        for db, ds in zip(b, s, strict=True):
            assert np.allclose(db.box, ds.box, atol=1.0)


def test_detectors_that_run_every_k_passes_reuse_their_result(models) -> None:
    general = models["General"]
    text = next(d for d in general.detectors if d.label_names == ("text",))
    assert text.every == 2
    import cv2

    canvas = np.full((720, 1280, 3), 30, np.uint8)
    cv2.putText(
        canvas, "LIVE SCORE 3-1", (400, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3
    )
    general.reset()
    first = [d for d in general.detect(canvas) if d.label == "text"]
    blank = np.full((720, 1280, 3), 30, np.uint8)
    second = [d for d in general.detect(blank) if d.label == "text"]  # skipped: reused
    third = [d for d in general.detect(blank) if d.label == "text"]  # runs again
    assert first and second == first and third == []


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((720, 1280), np.uint8),
        np.zeros((720, 1280, 4), np.uint8),
        np.zeros((720, 1280, 3), np.float32),
        np.zeros((1, 1, 3), np.uint8),
    ],
)
def test_bad_frames_are_refused_clearly(models, bad) -> None:
    with pytest.raises(ValueError, match="frame must be"):
        models["LiveShows"].detect(bad)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.6, 0.9, 0.5])
    assert nms(boxes, scores, 0.4).tolist() == [1, 2]
