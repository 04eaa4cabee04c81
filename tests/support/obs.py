"""OBS Studio (Debian's obs-studio 29) headless: a fresh config home and the command line.

OBS reads everything from its config folder ($XDG_CONFIG_HOME/obs-studio): global.ini (which
profile and scene collection, no first-run wizard), the profile (basic.ini, service.json,
streamEncoder.json) and the scene collection (one source filling the picture).
``--startstreaming`` starts the push; it runs under ``xvfb-run`` with software GL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

OBS_COMMAND = [
    "xvfb-run", "-a", "obs", "--startstreaming", "--disable-updater",
    "--disable-shutdown-check", "--disable-missing-files-check",
]  # fmt: skip

SIMPLE_OUTPUT = "[Output]\nMode=Simple\n"


def colour_source(width: int, height: int) -> dict[str, Any]:
    return {"id": "color_source", "versioned_id": "color_source_v3", "name": "Picture",
            "settings": {"color": 4281545523, "width": width, "height": height}}  # fmt: skip


def image_source(path: Path) -> dict[str, Any]:
    return {"id": "image_source", "versioned_id": "image_source", "name": "Picture",
            "settings": {"file": str(path)}}  # fmt: skip


def write_obs_config(
    config_home: Path,
    name: str,
    server: str,
    key: str,
    *,
    size: tuple[int, int],
    fps: int,
    source: dict[str, Any],
    output: str = SIMPLE_OUTPUT,
    encoder: dict[str, Any] | None = None,
) -> None:
    """A profile and scene collection called ``name`` streaming ``source`` (scaled to the
    picture) to ``server``/``key``; ``output`` is basic.ini's output part, ``encoder``
    streamEncoder.json (OBS's defaults when None)."""
    width, height = size
    obs = config_home / "obs-studio"
    profile, scenes = obs / "basic" / "profiles" / name, obs / "basic" / "scenes"
    profile.mkdir(parents=True)
    scenes.mkdir(parents=True)
    # FirstRun + LastVersion: no auto-configuration wizard on a fresh config.
    (obs / "global.ini").write_text(
        "[General]\nFirstRun=true\nLastVersion=486539266\nEnableAutoUpdates=false\n"
        "WarnBeforeStartingStream=false\nWarnBeforeStoppingStream=false\nConfirmOnExit=false\n"
        f"\n[Basic]\nProfile={name}\nProfileDir={name}\nSceneCollection={name}\n"
        f"SceneCollectionFile={name}\n"
    )
    (profile / "basic.ini").write_text(
        f"[General]\nName={name}\n\n[Video]\nBaseCX={width}\nBaseCY={height}\n"
        f"OutputCX={width}\nOutputCY={height}\nFPSType=1\nFPSInt={fps}\n\n{output}"
    )
    service = {"server": server, "key": key, "use_auth": False}
    (profile / "service.json").write_text(json.dumps({"type": "rtmp_custom", "settings": service}))
    if encoder is not None:
        (profile / "streamEncoder.json").write_text(json.dumps(encoder))
    item = {
        "name": source["name"], "id": 1, "visible": True, "pos": {"x": 0.0, "y": 0.0},
        "scale": {"x": 1.0, "y": 1.0}, "rot": 0.0, "align": 5,
        "bounds_type": 2, "bounds_align": 0, "bounds": {"x": float(width), "y": float(height)},
    }  # fmt: skip
    scene = {"id": "scene", "versioned_id": "scene", "name": "Scene",
             "settings": {"id_counter": 1, "custom_size": False, "items": [item]}}  # fmt: skip
    collection = {
        "name": name,
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{"name": "Scene"}],
        "sources": [source, scene],
        "transitions": [],
        "current_transition": "Fade",
        "transition_duration": 300,
    }
    (scenes / f"{name}.json").write_text(json.dumps(collection))


def obs_environment(home: Path, config_home: Path) -> dict[str, str]:
    """OBS's environment: its own home and config, software GL, and not the Qt plugin path
    OpenCV's import puts into this process's environment."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    return {
        **inherited,
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(config_home),
        "LIBGL_ALWAYS_SOFTWARE": "1",
    }


__all__ = [
    "OBS_COMMAND",
    "colour_source",
    "image_source",
    "obs_environment",
    "write_obs_config",
]
