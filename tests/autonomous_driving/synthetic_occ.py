"""A generated Occ3D-nuScenes dataset in the published on-disk layout, for CPU tests.

``make_occ_dataset`` writes, under ``root``:

- ``samples/CAM_*/<log>__CAM_*__<timestamp>.jpg``: 6 camera images per frame, rendered by ray
  casting a static per-scene world (ground plane + boxes) from a nuScenes-like camera rig, so
  the images show what the labels say;
- ``samples/LIDAR_TOP/<...>.pcd.bin``: the occupied voxel centres in the lidar frame, float32
  (n, 5) as nuScenes stores points (the camera-only model never reads them);
- ``gts/<scene_name>/<token>/labels.npz``: ``semantics`` / ``mask_lidar`` / ``mask_camera``,
  (X, Y, Z) uint8, axis order (x, y, z) of the ego frame, like Occ3D;
- ``occ_infos_temporal_{train,val}.pkl``: ``{'infos': [...], 'metadata': {'version': ...}}``
  with every per-info field the published converter writes (stored in shuffled order: the
  dataset must sort by timestamp).

The world (per scene, in a "road" frame: x along the road, y to the left, z up, ground at
z = 0) has a driveable road with cars, a truck, barriers and cones, sidewalks with
pedestrians, buildings (manmade) on the right and vegetation on the left; the ego drives
along the road, so frames of a scene see the same world shifted and turned. Horizontal sizes
scale with the grid's extent (with a floor of a few voxels), heights are metric.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

# Published camera order, yaw of the optical axis about the ego z axis (degrees, nuScenes
# rig), mounting position in the ego frame (m), focal length at 1600x900 (px).
# ../shared/data beside the repository (real Occ3D frame, published key lists)
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

CAMERAS = (
    ("CAM_FRONT", 0.0, (1.70, 0.02, 1.51), 1266.4),
    ("CAM_FRONT_RIGHT", -55.0, (1.55, -0.49, 1.50), 1260.5),
    ("CAM_FRONT_LEFT", 55.0, (1.52, 0.49, 1.51), 1257.9),
    ("CAM_BACK", 180.0, (0.03, 0.00, 1.57), 809.2),
    ("CAM_BACK_LEFT", 110.0, (1.04, 0.48, 1.56), 1256.7),
    ("CAM_BACK_RIGHT", -110.0, (1.03, -0.48, 1.57), 1259.5),
)
CAM_NAMES = tuple(c[0] for c in CAMERAS)
PRINCIPAL_POINT_1600x900 = (816.3, 491.5)
PC_RANGE = (-40.0, -40.0, -1.0, 40.0, 40.0, 5.4)
LIDAR2EGO_TRANSLATION = (0.943, 0.0, 1.841)
LIDAR2EGO_ROTATION = Quaternion(axis=(0, 0, 1), angle=-np.pi / 2)  # nuScenes LIDAR_TOP: x right
FREE = 17
# class id -> BGR colour of the rendered surface
PALETTE = {
    1: (40, 120, 255),
    4: (200, 60, 20),
    7: (60, 20, 220),
    8: (0, 200, 255),
    10: (160, 30, 140),
    11: (110, 110, 110),
    12: (120, 160, 175),
    13: (190, 190, 200),
    14: (60, 140, 120),
    15: (150, 170, 210),
    16: (30, 160, 40),
}
SKY_BGR = (235, 206, 135)
DETECTION_NAMES = {1: "barrier", 4: "car", 7: "pedestrian", 8: "traffic_cone", 10: "truck"}
FRAME_INTERVAL_US = 500_000  # 2 Hz key frames


def camera_rig(image_size: tuple[int, int]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, K 3x3, cam2ego 4x4) per camera; intrinsics scaled from 1600x900 to (W, H)."""
    w, h = image_size
    sx, sy = w / 1600.0, h / 900.0
    # optical axes: camera x right, y down, z forward; for yaw 0 that is ego (-y, -z, +x)
    base = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    rig = []
    for name, yaw, position, focal in CAMERAS:
        k = np.array(
            [
                [focal * sx, 0.0, PRINCIPAL_POINT_1600x900[0] * sx],
                [0.0, focal * sy, PRINCIPAL_POINT_1600x900[1] * sy],
                [0.0, 0.0, 1.0],
            ]
        )
        cam2ego = np.eye(4)
        cam2ego[:3, :3] = Quaternion(axis=(0, 0, 1), degrees=yaw).rotation_matrix @ base
        cam2ego[:3, 3] = position
        rig.append((name, k, cam2ego))
    return rig


def _pose(translation, rotation: Quaternion) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rotation.rotation_matrix
    m[:3, 3] = translation
    return m


def _rot_z(deg: float) -> np.ndarray:
    return Quaternion(axis=(0, 0, 1), degrees=deg).rotation_matrix


class _World:
    """Axis-aligned boxes and ground zones in a scene's road frame."""

    def __init__(self, rng: np.random.Generator, half_extent: float, voxel: float, travel: float):
        r, v = half_extent, voxel
        self.r = r
        lo, hi = -1.4 * r, 1.4 * r + travel
        boxes: list[tuple[tuple[float, float, float], tuple[float, float, float], int]] = []

        def add(cx, cy, length, width, height, cls):
            boxes.append(
                ((cx - length / 2, cy - width / 2, 0.0), (cx + length / 2, cy + width / 2, height), cls)
            )

        x = lo
        while x < hi:  # buildings on the right
            length = rng.uniform(0.2, 0.35) * r
            add(x + length / 2, -0.7 * r, length, 0.3 * r, rng.uniform(3.0, 5.0), 15)
            x += length + max(0.08 * r, 2 * v)
        x = lo
        while x < hi:  # hedges and trees on the left
            length = rng.uniform(0.1, 0.2) * r
            add(x + length / 2, 0.62 * r, length, 0.2 * r, rng.uniform(1.0, 2.8), 16)
            x += length + max(0.06 * r, 2 * v)
        for _ in range(5):  # parked / oncoming cars in the two outer lanes
            add(
                rng.uniform(lo, hi),
                rng.choice([-1, 1]) * 0.17 * r,
                max(0.12 * r, 3 * v),
                max(0.05 * r, 2 * v),
                1.6,
                4,
            )
        add(rng.uniform(0.2 * r, hi), 0.17 * r, max(0.22 * r, 4 * v), max(0.065 * r, 2 * v), 3.2, 10)
        for _ in range(4):
            add(
                rng.uniform(lo, hi),
                rng.choice([-1, 1]) * 0.33 * r,
                max(0.015 * r, v),
                max(0.015 * r, v),
                1.8,
                7,
            )
        for _ in range(2):
            add(
                rng.uniform(lo, hi),
                rng.choice([-1, 1]) * 0.235 * r,
                max(0.1 * r, 2 * v),
                max(0.01 * r, v),
                1.0,
                1,
            )
            add(
                rng.uniform(lo, hi),
                rng.choice([-1, 1]) * 0.22 * r,
                max(0.01 * r, v),
                max(0.01 * r, v),
                0.7,
                8,
            )
        self.lo = np.array([b[0] for b in boxes])
        self.hi = np.array([b[1] for b in boxes])
        self.cls = np.array([b[2] for b in boxes])

    def ground_class(self, y: np.ndarray) -> np.ndarray:
        ay = np.abs(y)
        out = np.where(y > 0, 14, 12)
        out = np.where(ay < 0.4 * self.r, 13, out)
        return np.where(ay < 0.25 * self.r, 11, out)

    def classify(self, p: np.ndarray) -> np.ndarray:
        """Class of points (n, 3) in the road frame: inside a box, below ground, or free."""
        out = np.where(p[:, 2] < 0, self.ground_class(p[:, 1]), FREE)
        inside = np.all((p[:, None, :] >= self.lo[None]) & (p[:, None, :] <= self.hi[None]), axis=-1)
        hit = inside.any(1)
        out[hit] = self.cls[inside[hit].argmax(1)]
        return out

    def cast(self, origin: np.ndarray, dirs: np.ndarray, t_max: float) -> tuple[np.ndarray, np.ndarray]:
        """First hit along rays ``origin + t*dirs`` (road frame): (class or -1, t or inf)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
            t1 = (self.lo[None] - origin) * inv[:, None, :]
            t2 = (self.hi[None] - origin) * inv[:, None, :]
        t_near = np.minimum(t1, t2).max(-1)
        t_far = np.maximum(t1, t2).min(-1)
        hit = (t_far >= t_near) & (t_near > 0)
        t_box = np.where(hit, t_near, np.inf)
        best = t_box.argmin(1)
        t = t_box[np.arange(len(dirs)), best]
        cls = np.where(np.isfinite(t), self.cls[best], -1)
        down = dirs[:, 2] < -1e-9
        t_ground = np.where(down, -origin[2] / np.where(down, dirs[:, 2], -1.0), np.inf)
        ground_first = t_ground < t
        y_ground = origin[1] + t_ground * dirs[:, 1]
        cls = np.where(ground_first, self.ground_class(y_ground), cls)
        t = np.minimum(t, t_ground)
        far = t > t_max
        return np.where(far, -1, cls), np.where(far, np.inf, t)


def _render(world, k, cam2road, size, rng, t_max):
    """BGR uint8 image and z-depth map of one camera."""
    w, h = size
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    rays_cam = pix @ np.linalg.inv(k).T  # z = 1: the ray parameter is the z-depth
    dirs = rays_cam @ cam2road[:3, :3].T
    cls, t = world.cast(cam2road[:3, 3], dirs, t_max)
    colours = np.array([PALETTE.get(int(c), SKY_BGR) for c in range(-1, FREE)], dtype=np.float64)
    img = colours[cls + 1]
    shade = np.where(np.isfinite(t), 1.0 - 0.45 * np.clip(t / t_max, 0, 1), 1.0 - 0.2 * v.ravel() / h)
    img = img * shade[:, None] + rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8).reshape(h, w, 3), t.reshape(h, w)


def _token(rng: np.random.Generator) -> str:
    return rng.bytes(16).hex()


def make_occ_dataset(
    root,
    *,
    scenes: int = 2,
    frames_per_scene: int = 2,
    grid: tuple[int, int, int] = (20, 20, 16),
    image_size: tuple[int, int] = (96, 64),
    seed: int = 0,
    pc_range: tuple[float, ...] = PC_RANGE,
    val_scenes: int = 0,
    version: str = "v1.0-trainval",
    num_cams: int = 6,
) -> dict[str, Path]:
    """Write the dataset; return its paths (``data_root``, ``train_ann``, ``val_ann``, ``gts``,
    ``samples``).

    ``grid`` = (X, Y, Z) voxels over ``pc_range`` (the model's bev_w, bev_h, pillar_h);
    ``image_size`` = (W, H). ``val_scenes`` = 0 puts every scene in both pkls (what an overfit
    check wants); k > 0 keeps the last k scenes for val only. ``num_cams`` < 6 keeps the first
    cameras of the published order.
    """
    if scenes < 1 or frames_per_scene < 1:
        raise ValueError(f"scenes and frames_per_scene must be >= 1, got {scenes}, {frames_per_scene}")
    if not 0 <= val_scenes < scenes or (val_scenes and scenes < 2):
        raise ValueError(f"val_scenes must be in [0, scenes), got {val_scenes} with scenes={scenes}")
    if not 1 <= num_cams <= len(CAMERAS):
        raise ValueError(
            f"num_cams must be in [1, {len(CAMERAS)}] (the nuScenes rig, published order), got {num_cams}"
        )
    root = Path(root)
    rng = np.random.default_rng(seed)
    nx, ny, nz = grid
    pc = np.asarray(pc_range, dtype=np.float64)
    voxel = (pc[3:] - pc[:3]) / np.array(grid)
    half_extent = float(pc[3] - pc[0]) / 2
    step = max(0.05 * half_extent, 1.5 * float(voxel[0]))  # ego motion per key frame
    t_max = 3.0 * half_extent
    rig = camera_rig(image_size)[:num_cams]
    lidar2ego = _pose(LIDAR2EGO_TRANSLATION, LIDAR2EGO_ROTATION)
    # voxel centres in the ego frame, (x, y, z) index order
    axes = [pc[i] + (np.arange(n) + 0.5) * voxel[i] for i, n in enumerate(grid)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    tolerance = 0.87 * float(
        voxel.max()
    )  # a voxel counts as seen when its centre is within it of the surface

    infos: dict[str, list[dict]] = {"train": [], "val": []}
    for s in range(scenes):
        scene_token, scene_name = _token(rng), f"scene-{s + 1:04d}"
        log = f"n015-2018-07-{11 + s:02d}-11-22-45+0800"
        world = _World(rng, half_extent, float(voxel[0]), step * frames_per_scene)
        road_yaw = float(rng.uniform(-180, 180))
        road_origin = np.array([300.0 + 500.0 * s, 1200.0 + 100.0 * s, 0.0])
        road2global = np.eye(4)
        road2global[:3, :3], road2global[:3, 3] = _rot_z(road_yaw), road_origin
        global2road = np.linalg.inv(road2global)
        t0 = 1531300000_000000 + s * 100_000_000
        tokens = [_token(rng) for _ in range(frames_per_scene)]
        yaw_rate = float(rng.uniform(-4.0, 4.0))  # degrees per key frame
        for f, token in enumerate(tokens):
            timestamp = t0 + f * FRAME_INTERVAL_US
            ego_yaw = yaw_rate * f
            ego_in_road = np.array([f * step, 0.03 * half_extent * np.sin(f), 0.0])
            e2g_t = road2global[:3, :3] @ ego_in_road + road_origin
            e2g_q = Quaternion(axis=(0, 0, 1), degrees=road_yaw + ego_yaw)
            ego2global = _pose(e2g_t, e2g_q)
            ego2road = global2road @ ego2global

            road_centres = centres @ ego2road[:3, :3].T + ego2road[:3, 3]
            semantics = world.classify(road_centres).astype(np.uint8)
            mask_camera = np.zeros(len(centres), dtype=bool)
            cams = {}
            for name, k, cam2ego in rig:
                img, depth = _render(world, k, ego2road @ cam2ego, image_size, rng, t_max)
                rel = f"samples/{name}/{log}__{name}__{timestamp}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img[..., ::-1]).save(root / rel, quality=95)
                # camera visibility: in the image and not behind the rendered surface
                pc_cam = centres @ np.linalg.inv(cam2ego)[:3, :3].T + np.linalg.inv(cam2ego)[:3, 3]
                z = pc_cam[:, 2]
                with np.errstate(divide="ignore", invalid="ignore"):
                    uv = (pc_cam @ k.T)[:, :2] / z[:, None]
                inside = (
                    (z > 0.1)
                    & (uv[:, 0] >= 0)
                    & (uv[:, 0] < image_size[0])
                    & (uv[:, 1] >= 0)
                    & (uv[:, 1] < image_size[1])
                )
                ui = np.clip(np.nan_to_num(uv[:, 0]).astype(int), 0, image_size[0] - 1)
                vi = np.clip(np.nan_to_num(uv[:, 1]).astype(int), 0, image_size[1] - 1)
                mask_camera |= inside & (z <= depth[vi, ui] + tolerance)
                # camera pose in the lidar frame (same ego pose: camera and lidar share the timestamp)
                cam2lidar = np.linalg.inv(lidar2ego) @ cam2ego
                cams[name] = dict(
                    data_path=str(root / rel),
                    type=name,
                    sample_data_token=_token(rng),
                    sensor2ego_translation=cam2ego[:3, 3].tolist(),
                    sensor2ego_rotation=list(Quaternion(matrix=cam2ego[:3, :3]).elements),
                    ego2global_translation=e2g_t.tolist(),
                    ego2global_rotation=list(e2g_q.elements),
                    timestamp=timestamp,
                    sensor2lidar_rotation=cam2lidar[:3, :3],
                    sensor2lidar_translation=cam2lidar[:3, 3],
                    cam_intrinsic=k,
                )
            occupied = semantics != FREE
            # lidar mask: within range, and either occupied or above ground (free space a beam crosses)
            in_range = np.linalg.norm(centres[:, :2], axis=1) < 0.95 * half_extent
            mask_lidar = in_range & (occupied | (centres[:, 2] > 0))

            gt_rel = f"gts/{scene_name}/{token}/labels.npz"
            (root / gt_rel).parent.mkdir(parents=True, exist_ok=True)
            shape = (nx, ny, nz)
            np.savez_compressed(
                root / gt_rel,
                semantics=semantics.reshape(shape),
                mask_lidar=mask_lidar.reshape(shape).astype(np.uint8),
                mask_camera=mask_camera.reshape(shape).astype(np.uint8),
            )
            lidar_rel = f"samples/LIDAR_TOP/{log}__LIDAR_TOP__{timestamp}.pcd.bin"
            (root / lidar_rel).parent.mkdir(parents=True, exist_ok=True)
            pts_lidar = (
                centres[occupied] @ np.linalg.inv(lidar2ego)[:3, :3].T + np.linalg.inv(lidar2ego)[:3, 3]
            )
            np.concatenate([pts_lidar, np.zeros((len(pts_lidar), 2))], 1).astype(np.float32).tofile(
                root / lidar_rel
            )

            boxes = _boxes_in_lidar(world, global2road, ego2global, lidar2ego, half_extent)
            speed = step / (FRAME_INTERVAL_US / 1e6)
            can_bus = np.concatenate(
                [
                    e2g_t,
                    e2g_q.elements,
                    [0.05, -0.02, 9.81],  # pos, orientation, accel
                    [0.0, 0.0, np.deg2rad(yaw_rate) / (FRAME_INTERVAL_US / 1e6)],
                    [speed, 0.0, 0.0],
                    [0.0, 0.0],
                ]
            )
            info = dict(
                lidar_path=str(root / lidar_rel),
                token=token,
                prev=tokens[f - 1] if f > 0 else "",
                next=tokens[f + 1] if f + 1 < frames_per_scene else "",
                can_bus=can_bus,
                frame_idx=f,
                sweeps=[],
                cams=cams,
                scene_token=scene_token,
                lidar2ego_translation=list(LIDAR2EGO_TRANSLATION),
                lidar2ego_rotation=list(LIDAR2EGO_ROTATION.elements),
                ego2global_translation=e2g_t.tolist(),
                ego2global_rotation=list(e2g_q.elements),
                timestamp=timestamp,
                occ_gt_path=gt_rel,
                **boxes,
            )
            val_only = val_scenes > 0 and s >= scenes - val_scenes
            if not val_only:
                infos["train"].append(info)
            if val_only or val_scenes == 0:
                infos["val"].append(info)

    paths = {"data_root": root, "gts": root / "gts", "samples": root / "samples"}
    for split, items in infos.items():
        order = rng.permutation(len(items))  # the published converter's order is not by time
        path = root / f"occ_infos_temporal_{split}.pkl"
        with open(path, "wb") as fh:
            pickle.dump({"infos": [items[i] for i in order], "metadata": {"version": version}}, fh)
        paths[f"{split}_ann"] = path
    return paths


def _boxes_in_lidar(world, global2road, ego2global, lidar2ego, half_extent):
    """The published box fields for the objects near the ego (unused by the occupancy loss)."""
    road2lidar = np.linalg.inv(lidar2ego) @ np.linalg.inv(ego2global) @ np.linalg.inv(global2road)
    keep = [i for i, c in enumerate(world.cls) if int(c) in DETECTION_NAMES]
    centres = (world.lo[keep] + world.hi[keep]) / 2
    dims = world.hi[keep] - world.lo[keep]
    centres_l = centres @ road2lidar[:3, :3].T + road2lidar[:3, 3]
    near = np.linalg.norm(centres_l[:, :2], axis=1) < half_extent
    yaw = np.arctan2(road2lidar[1, 0], road2lidar[0, 0])  # box x axis (road) in the lidar frame
    n = int(near.sum())
    gt_boxes = np.concatenate(
        [centres_l[near], dims[near][:, [1, 0, 2]], np.full((n, 1), -yaw - np.pi / 2)], 1
    )
    return dict(
        gt_boxes=gt_boxes.astype(np.float64),
        gt_names=np.array([DETECTION_NAMES[int(world.cls[keep][i])] for i in np.flatnonzero(near)]),
        gt_velocity=np.zeros((n, 2)),
        num_lidar_pts=np.full(n, 10, dtype=np.int64),
        num_radar_pts=np.zeros(n, dtype=np.int64),
        valid_flag=np.ones(n, dtype=bool),
    )
