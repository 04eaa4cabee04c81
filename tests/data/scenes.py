"""The labelled evaluation set for the recognition models, built from the files beside it.

Every frame is 1280x720 RGB and generated deterministically from a seed, so tests and
bench/models.py see the same pictures without storing them:

* ``face_frames``: the three photos in images/ with hand-labelled faces and people
  (labels.json), pasted as tiles onto CC0 backgrounds at face widths of 40-220 px, with
  brightness changes, mirroring and JPEG compression.
* ``negative_frames``: pictures with no face, person, ball or hero (flat grey, gradients,
  CC0 textures and photos of a cat, coffee, a rocket).
* ``court_frames``: a rendered basketball-game picture: wooden court, players (the photo
  tiles cut to their person boxes), an orange ball and a scoreboard band.
* ``moba_frames``: a rendered top-down MOBA picture in the visual language of Honor of
  Kings: heroes with health bars (team colour in a dark frame, segment ticks, level badge,
  name), minions with thin bars, a minimap and skill buttons.

Labels are boxes (x0, y0, x1, y1) in frame pixels, x1/y1 exclusive.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np

DATA_DIR = Path(__file__).resolve().parent
IMAGES_DIR = DATA_DIR / "images"
WIDTH, HEIGHT = 1280, 720
PORTRAITS = ("astronaut.jpg", "grace_hopper.jpg", "camera.jpg")
BACKGROUNDS = ("brick.jpg", "grass.jpg", "gravel.jpg", "coffee.jpg", "rocket.jpg")
NEGATIVES = (
    "chelsea.jpg",
    "coffee.jpg",
    "rocket.jpg",
    "brick.jpg",
    "grass.jpg",
    "gravel.jpg",
)

Box = tuple[float, float, float, float]


@dataclass
class LabelledFrame:
    name: str
    image: np.ndarray  # HxWx3 uint8 RGB
    boxes: dict[str, list[Box]] = field(default_factory=dict)

    def add(self, label: str, box: Box) -> None:
        self.boxes.setdefault(label, []).append(box)


@cache
def load_image(name: str) -> np.ndarray:
    bgr = cv2.imread(str(IMAGES_DIR / name), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(IMAGES_DIR / name)
    return np.ascontiguousarray(bgr[..., ::-1])


@cache
def labels() -> dict[str, dict[str, list[list[int]]]]:
    table = json.loads((DATA_DIR / "labels.json").read_text())
    return {k: v for k, v in table.items() if not k.startswith("_")}


def _cover(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image scaled to cover the frame (tiled when it is small), randomly mirrored."""
    h, w = image.shape[:2]
    if w < WIDTH // 2:
        image = np.tile(image, (math.ceil(HEIGHT / h), math.ceil(WIDTH / w), 1))
        h, w = image.shape[:2]
    scale = max(WIDTH / w, HEIGHT / h)
    big = cv2.resize(image, (math.ceil(w * scale), math.ceil(h * scale)))
    y = int(rng.integers(0, big.shape[0] - HEIGHT + 1))
    x = int(rng.integers(0, big.shape[1] - WIDTH + 1))
    out = big[y : y + HEIGHT, x : x + WIDTH]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def _free(placed: list[Box], box: Box, margin: float = 4) -> bool:
    x0, y0, x1, y1 = box
    return all(
        x1 + margin <= a0 or a1 + margin <= x0 or y1 + margin <= b0 or b1 + margin <= y0
        for a0, b0, a1, b1 in placed
    )


def _paste_tile(
    frame: LabelledFrame,
    name: str,
    crop: Box,
    scale: float,
    at: tuple[int, int],
    mirror: bool,
    gain: float,
    person_label: str,
) -> None:
    """Paste the ``crop`` of a labelled photo at ``at`` and carry its labels over."""
    src = load_image(name)
    cx0, cy0, cx1, cy1 = (int(v) for v in crop)
    tile = src[cy0:cy1, cx0:cx1]
    tw, th = round((cx1 - cx0) * scale), round((cy1 - cy0) * scale)
    tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA)
    if mirror:
        tile = tile[:, ::-1]
    tile = np.clip(tile.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    x, y = at
    frame.image[y : y + th, x : x + tw] = tile
    for label, out_label in (("face", "face"), ("person", person_label)):
        for bx0, by0, bx1, by1 in labels()[name].get(label, []):
            # Clip to the crop, map into the tile, mirror if needed.
            bx0, by0 = max(bx0, cx0) - cx0, max(by0, cy0) - cy0
            bx1, by1 = min(bx1, cx1) - cx0, min(by1, cy1) - cy0
            if bx1 <= bx0 or by1 <= by0:
                continue
            if mirror:
                bx0, bx1 = (cx1 - cx0) - bx1, (cx1 - cx0) - bx0
            frame.add(
                out_label, (x + bx0 * scale, y + by0 * scale, x + bx1 * scale, y + by1 * scale)
            )


def face_frames(count: int = 40, seed: int = 1) -> list[LabelledFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        bg = load_image(BACKGROUNDS[index % len(BACKGROUNDS)])
        frame = LabelledFrame(f"faces{index:02d}", _cover(bg, rng))
        placed: list[Box] = []
        for _ in range(int(rng.integers(1, 5))):
            name = PORTRAITS[int(rng.integers(len(PORTRAITS)))]
            src = load_image(name)
            fx0, _, fx1, _ = labels()[name]["face"][0]
            face_w = math.exp(rng.uniform(math.log(40), math.log(220)))
            scale = face_w / (fx1 - fx0)
            tw, th = src.shape[1] * scale, src.shape[0] * scale
            if tw >= WIDTH or th >= HEIGHT:
                continue
            for _attempt in range(30):
                x = int(rng.integers(0, int(WIDTH - tw)))
                y = int(rng.integers(0, int(HEIGHT - th)))
                box = (x, y, x + tw, y + th)
                if _free(placed, box):
                    placed.append(box)
                    _paste_tile(
                        frame,
                        name,
                        (0, 0, src.shape[1], src.shape[0]),
                        scale,
                        (x, y),
                        bool(rng.random() < 0.5),
                        float(rng.uniform(0.7, 1.2)),
                        "person",
                    )
                    break
        frame.image = _jpeg(frame.image, int(rng.integers(70, 92)))
        frames.append(frame)
    return frames


def negative_frames() -> list[LabelledFrame]:
    rng = np.random.default_rng(7)
    frames = [
        LabelledFrame("flat_grey", np.full((HEIGHT, WIDTH, 3), 128, np.uint8)),
        LabelledFrame("black", np.zeros((HEIGHT, WIDTH, 3), np.uint8)),
    ]
    ramp = np.linspace(0, 255, WIDTH, dtype=np.float32)[None, :, None]
    gradient = np.broadcast_to(ramp * np.array([1.0, 0.6, 0.3], np.float32), (HEIGHT, WIDTH, 3))
    frames.append(LabelledFrame("gradient", gradient.astype(np.uint8).copy()))
    for name in NEGATIVES:
        frames.append(LabelledFrame(f"neg_{Path(name).stem}", _cover(load_image(name), rng)))
    return frames


def _court(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    planks = (np.sin(yy / 9.0) * 6 + rng.normal(0, 3, (HEIGHT, WIDTH))).astype(np.float32)
    base = np.array([196, 140, 84], np.float32) + (yy / HEIGHT * 30)[..., None]
    image = np.clip(base + planks[..., None], 0, 255).astype(np.uint8)
    white = (240, 240, 235)
    cv2.line(image, (WIDTH // 2, 0), (WIDTH // 2, HEIGHT), white, 4)
    cv2.circle(image, (WIDTH // 2, HEIGHT // 2), 110, white, 4)
    cv2.rectangle(image, (0, 220), (230, 500), (150, 40, 40), -1)  # painted key
    cv2.rectangle(image, (WIDTH - 230, 220), (WIDTH, 500), (150, 40, 40), -1)
    cv2.ellipse(image, (0, HEIGHT // 2), (420, 330), 0, -90, 90, white, 4)
    cv2.ellipse(image, (WIDTH, HEIGHT // 2), (420, 330), 0, 90, 270, white, 4)
    return image


def _ball(image: np.ndarray, centre: tuple[int, int], radius: int) -> Box:
    cx, cy = centre
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
    inside = xx**2 + yy**2 <= radius**2
    # Shaded orange sphere: lit from the top left.
    shade = np.clip(1.0 - 0.35 * ((xx + yy) / (2 * radius) + 0.5), 0.55, 1.0)
    colour = np.array([235, 110, 30], np.float32)
    patch = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    patch[inside] = (colour[None] * shade[inside][:, None]).astype(np.uint8)
    cv2.line(image, (cx - radius, cy), (cx + radius, cy), (40, 20, 10), max(1, radius // 8))
    cv2.ellipse(
        image, (cx, cy), (radius // 2, radius), 0, 0, 360, (40, 20, 10), max(1, radius // 8)
    )
    return (cx - radius, cy - radius, cx + radius + 1, cy + radius + 1)


def _scoreboard(image: np.ndarray, rng: np.random.Generator) -> Box:
    home, away = int(rng.integers(60, 120)), int(rng.integers(60, 120))
    minute, second = int(rng.integers(0, 12)), int(rng.integers(0, 60))
    text = f"LAL  {home:3d}   BOS  {away:3d}    Q4  {minute}:{second:02d}"
    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.9, 2
    (tw, _th), _ = cv2.getTextSize(text, font, size, thick)
    w, h = tw + 28, 50
    x = (WIDTH - w) // 2
    y = HEIGHT - h - 24
    cv2.rectangle(image, (x, y), (x + w, y + h), (20, 24, 40), -1)
    cv2.rectangle(image, (x, y), (x + 70, y + h), (90, 30, 130), -1)
    cv2.rectangle(image, (x + 230, y), (x + 300, y + h), (20, 90, 40), -1)
    cv2.putText(image, text, (x + 14, y + 34), font, size, (250, 250, 250), thick, cv2.LINE_AA)
    return (x, y, x + w, y + h)


def court_frames(count: int = 12, seed: int = 3) -> list[LabelledFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        frame = LabelledFrame(f"court{index:02d}", _court(rng))
        frame.add("scoreboard", _scoreboard(frame.image, rng))
        placed: list[Box] = [frame.boxes["scoreboard"][0]]
        for _ in range(int(rng.integers(2, 6))):
            name = PORTRAITS[int(rng.integers(len(PORTRAITS)))]
            crop = tuple(labels()[name]["person"][0])
            height = rng.uniform(150, 300)
            scale = height / (crop[3] - crop[1])
            tw, th = (crop[2] - crop[0]) * scale, (crop[3] - crop[1]) * scale
            for _attempt in range(30):
                x = int(rng.integers(0, int(WIDTH - tw)))
                y = int(rng.integers(0, int(HEIGHT - 90 - th)))
                box = (x, y, x + tw, y + th)
                if _free(placed, box):
                    placed.append(box)
                    _paste_tile(
                        frame, name, crop, scale, (x, y), bool(rng.random() < 0.5), 1.0, "player"
                    )
                    break
        radius = int(rng.integers(10, 22))
        for _attempt in range(50):
            centre = (int(rng.integers(40, WIDTH - 40)), int(rng.integers(40, HEIGHT - 120)))
            box = (centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius)
            if _free(placed, box):
                frame.add("ball", _ball(frame.image, centre, radius))
                break
        frame.boxes.pop("face", None)
        frame.image = _jpeg(frame.image, 85)
        frames.append(frame)
    return frames


TEAM_COLOURS = {"own": (60, 215, 70), "ally": (40, 140, 250), "enemy": (230, 45, 40)}


def _moba_ground(rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 1, (HEIGHT // 16, WIDTH // 16)).astype(np.float32)
    noise = cv2.resize(noise, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 6, (HEIGHT, WIDTH)).astype(np.float32)
    grass = np.array([70, 105, 60], np.float32)
    image = grass + (noise * 12 + fine)[..., None]
    lane = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.line(lane, (0, HEIGHT), (WIDTH, 0), 255, 150)
    lane = cv2.GaussianBlur(lane, (0, 0), 25).astype(np.float32)[..., None] / 255
    image = (
        image * (1 - lane) + (np.array([150, 135, 100], np.float32) + noise[..., None] * 8) * lane
    )
    # Stone walls / brush clumps.
    for _ in range(8):
        c = (int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)))
        cv2.ellipse(
            image,
            c,
            (int(rng.integers(30, 90)), int(rng.integers(20, 60))),
            float(rng.uniform(0, 180)),
            0,
            360,
            (50, 80, 45),
            -1,
        )
    return np.clip(image, 0, 255).astype(np.uint8)


def _health_bar(
    image: np.ndarray,
    x: int,
    y: int,
    w: int,
    h: int,
    colour: tuple[int, int, int],
    fill: float,
    level: int | None,
    name: str | None,
) -> Box:
    cv2.rectangle(image, (x - 2, y - 2), (x + w + 1, y + h + 1), (15, 15, 18), -1)
    cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), (45, 40, 40), -1)
    filled = max(1, round(w * fill))
    cv2.rectangle(image, (x, y), (x + filled - 1, y + h - 1), colour, -1)
    for tick in range(x + w // 8, x + filled, max(6, w // 8)):
        cv2.line(image, (tick, y), (tick, y + h // 2), (25, 25, 25), 1)
    x0, y0 = x - 2, y - 2
    if level is not None:
        side = h + 6
        cv2.rectangle(image, (x - side - 2, y - 3), (x - 3, y + h + 2), (25, 30, 45), -1)
        cv2.putText(
            image,
            str(level),
            (x - side + 1, y + h),
            cv2.FONT_HERSHEY_SIMPLEX,
            h / 24,
            (240, 220, 120),
            1,
            cv2.LINE_AA,
        )
        x0 = x - side - 2
    if name is not None:
        cv2.putText(
            image,
            name,
            (x + 4, y - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (245, 245, 245),
            1,
            cv2.LINE_AA,
        )
        y0 = y - 18
    return (x0, y0, x + w + 2, y + h + 2)


def _hero_body(image: np.ndarray, cx: int, top: int, size: int, rng: np.random.Generator) -> Box:
    colour = tuple(int(v) for v in rng.integers(40, 230, 3))
    cape = tuple(int(v) for v in rng.integers(40, 230, 3))
    cv2.ellipse(
        image,
        (cx, top + int(size * 0.95)),
        (int(size * 0.45), int(size * 0.55)),
        0,
        0,
        360,
        cape,
        -1,
    )
    cv2.ellipse(
        image,
        (cx, top + int(size * 0.8)),
        (int(size * 0.3), int(size * 0.45)),
        0,
        0,
        360,
        colour,
        -1,
    )
    cv2.circle(image, (cx, top + int(size * 0.3)), int(size * 0.22), (225, 190, 160), -1)
    cv2.ellipse(
        image,
        (cx, top + int(size * 1.55)),
        (int(size * 0.5), int(size * 0.12)),
        0,
        0,
        360,
        (30, 40, 30),
        -1,
    )  # shadow
    return (cx - size * 0.5, top + size * 0.08, cx + size * 0.5, top + size * 1.67)


HERO_NAMES = ("Arthur", "Daji", "Luban", "Mulan", "Zhuge", "Hou Yi", "Diaochan", "Lian Po")


def moba_frames(count: int = 16, seed: int = 5) -> list[LabelledFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        frame = LabelledFrame(f"moba{index:02d}", _moba_ground(rng))
        image = frame.image
        placed: list[Box] = [
            (0, 0, 230, 230),
            (WIDTH - 330, HEIGHT - 260, WIDTH, HEIGHT),
            (0, HEIGHT - 230, 260, HEIGHT),
        ]
        # Minions: small blobs with thin, short bars and no badge (must not count as heroes).
        for _ in range(int(rng.integers(3, 9))):
            x, y = int(rng.integers(250, WIDTH - 340)), int(rng.integers(40, HEIGHT - 60))
            team = ("ally", "enemy")[int(rng.integers(2))]
            cv2.circle(image, (x + 14, y + 22), 11, (120, 110, 150), -1)
            _health_bar(
                image, x, y, 30, 4, TEAM_COLOURS[team], float(rng.uniform(0.3, 1)), None, None
            )
        zoom = rng.uniform(0.8, 1.25)
        heroes = int(rng.integers(1, 6))
        teams = ["own"] + [("ally", "enemy")[int(rng.integers(2))] for _ in range(heroes - 1)]
        for team in teams:
            bar_w = int(round(rng.uniform(88, 112) * zoom))
            bar_h = max(7, round(bar_w / 10))
            body = int(bar_w * 0.95)
            for _attempt in range(40):
                x = int(rng.integers(250, WIDTH - 340 - bar_w))
                y = int(rng.integers(40, HEIGHT - 40 - bar_h - int(body * 1.7)))
                extent = (x - bar_h - 10, y - 20, x + bar_w + 4, y + bar_h + 6 + body * 1.7)
                if _free(placed, extent, margin=10):
                    placed.append(extent)
                    break
            else:
                continue
            body_box = _hero_body(image, x + bar_w // 2, y + bar_h + 6, body, rng)
            bar_box = _health_bar(
                image,
                x,
                y,
                bar_w,
                bar_h,
                TEAM_COLOURS[team],
                float(rng.uniform(0.25, 1.0)),
                int(rng.integers(1, 16)),
                HERO_NAMES[int(rng.integers(len(HERO_NAMES)))],
            )
            frame.add(
                "hero",
                (
                    min(bar_box[0], body_box[0]),
                    bar_box[1],
                    max(bar_box[2], body_box[2]),
                    body_box[3],
                ),
            )
        _moba_hud(image, rng)
        frame.image = _jpeg(image, 85)
        frames.append(frame)
    return frames


def _moba_hud(image: np.ndarray, rng: np.random.Generator) -> None:
    # Minimap with team dots, skill buttons, joystick, kill score.
    cv2.rectangle(image, (8, 8), (212, 212), (20, 30, 25), -1)
    cv2.rectangle(image, (8, 8), (212, 212), (160, 150, 110), 2)
    cv2.line(image, (16, 204), (204, 16), (120, 110, 80), 6)
    for _ in range(8):
        team = ("ally", "enemy")[int(rng.integers(2))]
        c = (int(rng.integers(20, 200)), int(rng.integers(20, 200)))
        cv2.circle(image, c, 5, TEAM_COLOURS[team], -1)
    for i, (dx, dy, r) in enumerate(
        ((-90, -80, 55), (-200, -60, 38), (-160, -160, 38), (-60, -200, 38))
    ):
        c = (WIDTH + dx, HEIGHT + dy)
        cv2.circle(image, c, r, (30, 35, 50), -1)
        cv2.circle(image, c, r, (200, 190, 150), 2)
        cv2.putText(
            image,
            "ABCD"[i],
            (c[0] - 9, c[1] + 9),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.8,
            (230, 230, 230),
            2,
        )
    cv2.circle(image, (140, HEIGHT - 120), 80, (60, 60, 70), 3)
    cv2.circle(image, (140, HEIGHT - 120), 30, (180, 180, 190), -1)
    cv2.rectangle(image, (WIDTH // 2 - 90, 6), (WIDTH // 2 + 90, 40), (20, 20, 30), -1)
    cv2.putText(
        image,
        f"{int(rng.integers(0, 30))}  VS  {int(rng.integers(0, 30))}",
        (WIDTH // 2 - 70, 32),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.8,
        (240, 240, 240),
        2,
    )
