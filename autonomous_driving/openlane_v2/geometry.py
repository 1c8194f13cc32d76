"""Per-frame geometry the dataset derives from a collection frame
(driving_openlane_params.md §1.1). "lidar" in the published names is the ego frame.

- per camera, from the extrinsic (R, t) (camera → ego) and the intrinsic K:
  ``lidar2cam = [[Rᵀ, −Rᵀt], [0, 1]]``, ``lidar2img = pad4(K) @ lidar2cam`` (no ego2lidar
  factor), ``rots = R⁻¹``, ``trans = −t``, ``cam2imgs = K``, ``cam_intrinsic = pad4(K)``;
- ``can_bus (18,)`` from the ego pose, **absolute** (published quirk kept: it is part of
  what a published checkpoint was trained on): translation, quaternion (w, x, y, z),
  zeros, yaw in radians and degrees within [0, 2π) / [0, 360).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pyquaternion import Quaternion

FRONT_CAMERA = "ring_front_center"


def pad4(k: np.ndarray) -> np.ndarray:
    """A 3x3 intrinsic in the top-left of a 4x4 identity."""
    out = np.eye(4)
    out[:3, :3] = np.asarray(k, dtype=np.float64)
    return out


def camera_geometry(sensor: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One camera's ``lidar2cam``, ``lidar2img``, ``cam_intrinsic`` (4x4), ``cam2imgs`` (3x3),
    ``rots`` and ``trans`` from its ``extrinsic`` / ``intrinsic`` entries."""
    r = np.asarray(sensor["extrinsic"]["rotation"], dtype=np.float64)
    t = np.asarray(sensor["extrinsic"]["translation"], dtype=np.float64)
    k = np.asarray(sensor["intrinsic"]["K"], dtype=np.float64)
    lidar2cam = np.eye(4)
    lidar2cam[:3, :3] = r.T
    lidar2cam[:3, 3] = -r.T @ t
    return {
        "lidar2cam": lidar2cam, "lidar2img": pad4(k) @ lidar2cam, "cam_intrinsic": pad4(k), "cam2imgs": k,
        "rots": np.linalg.inv(r), "trans": -t,
    }


def frame_cameras(frame: Mapping[str, Any]) -> list[str]:
    """The frame's cameras in sensor-dict order (``get_camera_list``); the first must be the
    front camera, whose features the traffic-element head reads."""
    cams = list(frame["sensor"])
    if not cams or cams[0] != FRONT_CAMERA:
        raise ValueError(f"the first camera must be {FRONT_CAMERA!r}, got {cams[:1]}")
    return cams


def can_bus(pose: Mapping[str, Any]) -> np.ndarray:
    """The published 18-vector (absolute global pose, not a delta)."""
    rotation = np.asarray(pose["rotation"], dtype=np.float64)
    out = np.zeros(18)
    out[:3] = np.asarray(pose["translation"], dtype=np.float64)
    q = Quaternion(matrix=rotation)
    out[3:7] = q.elements  # (w, x, y, z)
    yaw_deg = math.degrees(q.yaw_pitch_roll[0])
    if yaw_deg < 0:
        yaw_deg += 360.0
    out[16] = math.radians(yaw_deg)
    out[17] = yaw_deg
    return out


def frame_geometry(frame: Mapping[str, Any], cameras: Sequence[str] | None = None) -> dict[str, Any]:
    """Lists over the cameras (front first) of every per-camera matrix, plus ``can_bus``."""
    cams = list(cameras) if cameras is not None else frame_cameras(frame)
    per_cam = [camera_geometry(frame["sensor"][c]) for c in cams]
    out: dict[str, Any] = {key: [g[key] for g in per_cam] for key in per_cam[0]}
    out["can_bus"] = can_bus(frame["pose"])
    out["cameras"] = cams
    return out
