"""Random indoor rooms for the scene simulator: materials, furniture, lights and camera poses.

Each scene is a room (floor, four walls, ceiling) holding furniture (boxes rotated about the
vertical axis, some stacked), spheres, a rug and pictures on the walls (thin boxes), all with
procedural textures (flat, stripes, checker, sum-of-sinusoids noise). A pinhole camera stands
at a random pose inside the room; one point light near the ceiling lights it. Everything here
is plain NumPy drawn from one generator; :mod:`safetynet.data.rgbd.raycast` renders it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Material texture kinds.
FLAT, STRIPES, CHECKER, NOISE = 0, 1, 2, 3
_N_WAVES = 4  # sinusoids per material (noise uses all, stripes the first, checker the first two)
# Material parameter layout: c1(3) c2(3) kind(1) absorbing(1) then per wave: freq, cos, sin, phase.
_MAT_DIM = 8 + 4 * _N_WAVES


def _material(rng: np.random.Generator, role: str) -> np.ndarray:
    """One material row: base colours, texture kind and waves, chosen to look like ``role``."""
    m = np.zeros(_MAT_DIM, dtype=np.float64)
    if role == "ceiling":
        c1 = rng.uniform(0.75, 0.95) * np.ones(3) * rng.uniform(0.95, 1.05, 3)
        kind = FLAT
    elif role == "wall":
        hue = rng.uniform(0.4, 1.0, 3)
        c1 = np.clip(hue * rng.uniform(0.5, 0.95), 0, 1)
        kind = rng.choice([FLAT, FLAT, NOISE, STRIPES])
    elif role == "floor":
        c1 = np.clip(np.array([0.55, 0.38, 0.22]) * rng.uniform(0.5, 1.4) + rng.normal(0, 0.06, 3), 0.02, 1)
        kind = rng.choice([STRIPES, CHECKER, NOISE, FLAT])
    elif role == "picture":
        c1 = rng.uniform(0, 1, 3)
        kind = rng.choice([NOISE, STRIPES, CHECKER])
    else:  # furniture, rug, spheres
        c1 = rng.uniform(0.03, 0.9, 3) * rng.uniform(0.3, 1.0)
        kind = rng.choice([FLAT, FLAT, NOISE, STRIPES, CHECKER])
    contrast = rng.uniform(0.3, 0.9) if role != "picture" else rng.uniform(0.6, 1.0)
    c2 = np.clip(c1 * (1 - contrast) + rng.uniform(0, 1, 3) * contrast * rng.uniform(0.2, 1.0), 0, 1)
    m[0:3], m[3:6], m[6] = c1, c2, kind
    # Some dark furniture absorbs the IR pattern (black leather, screens): holes in real depth maps.
    m[7] = float(role in ("furniture", "sphere") and rng.random() < 0.25)
    base_freq = {"floor": 2.0, "wall": 3.0, "picture": 8.0}.get(role, 4.0)
    for k in range(_N_WAVES):
        ang = rng.uniform(0, math.pi) if kind == NOISE or k > 1 else (0.0 if k == 0 else math.pi / 2)
        freq = base_freq * rng.uniform(0.5, 2.0) * (1.7 ** k if kind == NOISE else 1.0)
        m[8 + 4 * k: 12 + 4 * k] = [freq, math.cos(ang), math.sin(ang), rng.uniform(0, 2 * math.pi)]
    return m


@dataclass
class _Room:
    size: np.ndarray  # (3,) Lx, Ly (height), Lz
    boxes: list  # (center(3), half(3), yaw, face_materials(6))
    spheres: list  # (center(3), radius, material)
    materials: list  # rows of _MAT_DIM
    room_faces: list  # 6 material ids for the room box faces
    light: np.ndarray  # (3,)
    ambient: float
    light_power: float


def _sample_room(rng: np.random.Generator, max_boxes: int, max_spheres: int, max_pictures: int) -> _Room:
    L = np.array([rng.uniform(3.0, 7.0), rng.uniform(2.4, 3.2), rng.uniform(3.0, 8.0)])
    mats: list[np.ndarray] = []

    def add(role: str) -> int:
        mats.append(_material(rng, role))
        return len(mats) - 1

    floor, ceiling, wall = add("floor"), add("ceiling"), add("wall")
    wall2 = add("wall") if rng.random() < 0.4 else wall
    # Faces are indexed by normal direction (-x, +x, -y, +y, -z, +z); the room's normals point
    # inwards, so its +y face is the floor.
    room_faces = [wall, wall2, ceiling, floor, wall2, wall]
    boxes, spheres = [], []
    tops: list[tuple[np.ndarray, np.ndarray]] = []  # (center xz, half xz) of placed furniture tops
    for _ in range(rng.integers(1, max_boxes + 1) if max_boxes > 0 else 0):
        mat = add("furniture")
        side = mats[mat].copy()
        side[0:6] *= rng.uniform(0.7, 1.0)
        mats.append(side)
        faces = [len(mats) - 1] * 2 + [mat, mat] + [len(mats) - 1] * 2
        if tops and rng.random() < 0.3:  # stacked on an earlier box
            (cxz, hxz, top_y) = tops[rng.integers(len(tops))]
            half = np.array([rng.uniform(0.1, 0.35), rng.uniform(0.05, 0.3), rng.uniform(0.1, 0.35)])
            half[[0, 2]] = np.minimum(half[[0, 2]], hxz)
            center = np.array([cxz[0] + rng.uniform(-1, 1) * (hxz[0] - half[0]), top_y + half[1],
                               cxz[1] + rng.uniform(-1, 1) * (hxz[1] - half[2])])
        else:
            tall = rng.random() < 0.25
            half = np.array([rng.uniform(0.2, 1.0), rng.uniform(0.6, 1.0) if tall else rng.uniform(0.15, 0.5),
                             rng.uniform(0.2, 0.6 if tall else 1.0)])
            half = np.minimum(half, [L[0] / 2 - 0.1, L[1] / 2 - 0.05, L[2] / 2 - 0.1])
            center = np.array([rng.uniform(half[0], L[0] - half[0]), half[1], rng.uniform(half[2], L[2] - half[2])])
        yaw = rng.uniform(-math.pi, math.pi) if rng.random() < 0.6 else 0.0
        boxes.append((center, half, yaw, faces))
        tops.append((center[[0, 2]], half[[0, 2]], center[1] + half[1]))
    if rng.random() < 0.6:  # rug: a thin box on the floor
        rug = add("rug")
        half = np.array([rng.uniform(0.5, 1.5), 0.004, rng.uniform(0.4, 1.2)])
        half[[0, 2]] = np.minimum(half[[0, 2]], L[[0, 2]] / 2 - 0.05)
        center = np.array([rng.uniform(half[0], L[0] - half[0]), half[1], rng.uniform(half[2], L[2] - half[2])])
        boxes.append((center, half, rng.uniform(-0.5, 0.5), [rug] * 6))
    for _ in range(rng.integers(0, max_pictures + 1) if max_pictures > 0 else 0):
        pic = add("picture")
        frame_mat = add("furniture")
        w, h, t = rng.uniform(0.25, 0.8), rng.uniform(0.2, 0.5), 0.015
        y = rng.uniform(1.1, min(2.1, L[1] - h - 0.1))
        wall_id = rng.integers(4)
        if wall_id < 2:  # on an x wall: thin along x
            x = t if wall_id == 0 else L[0] - t
            center, half = np.array([x, y, rng.uniform(w + 0.1, L[2] - w - 0.1)]), np.array([t, h, w])
            faces = [pic if wall_id == 1 else frame_mat, pic if wall_id == 0 else frame_mat] + [frame_mat] * 4
        else:
            z = t if wall_id == 2 else L[2] - t
            center, half = np.array([rng.uniform(w + 0.1, L[0] - w - 0.1), y, z]), np.array([w, h, t])
            faces = [frame_mat] * 4 + [pic if wall_id == 3 else frame_mat, pic if wall_id == 2 else frame_mat]
        boxes.append((center, half, 0.0, faces))
    for _ in range(rng.integers(0, max_spheres + 1) if max_spheres > 0 else 0):
        r = rng.uniform(0.08, 0.35)
        if tops and rng.random() < 0.5:
            (cxz, hxz, top_y) = tops[rng.integers(len(tops))]
            c = np.array([cxz[0] + rng.uniform(-0.5, 0.5) * hxz[0], top_y + r, cxz[1] + rng.uniform(-0.5, 0.5) * hxz[1]])
        else:
            c = np.array([rng.uniform(r, L[0] - r), r if rng.random() < 0.7 else rng.uniform(r, L[1] - r),
                          rng.uniform(r, L[2] - r)])
        spheres.append((c, r, add("sphere")))
    light = np.array([rng.uniform(0.2, 0.8) * L[0], L[1] - rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.8) * L[2]])
    return _Room(L, boxes, spheres, mats, room_faces, light, rng.uniform(0.12, 0.35), rng.uniform(0.8, 1.3))


def _sample_camera(rng: np.random.Generator, room: _Room, hfov_deg: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera centre, rotation (columns: right, down, forward in world) and horizontal FOV (radians)."""
    L = room.size
    pos = None
    for _ in range(60):
        p = np.array([rng.uniform(0.4, L[0] - 0.4), rng.uniform(0.9, min(1.9, L[1] - 0.3)), rng.uniform(0.4, L[2] - 0.4)])
        if all(np.any(np.abs(_to_local(p, c, yaw)) > h + 0.35) for c, h, yaw, _ in room.boxes):
            pos = p
            break
        pos = p if pos is None else pos
    centre = np.array([L[0] / 2, 1.0, L[2] / 2])
    to_c = centre - pos
    yaw = math.atan2(to_c[0], to_c[2]) + rng.uniform(-1.0, 1.0)
    pitch = math.radians(rng.uniform(-35, 5))
    roll = math.radians(rng.uniform(-4, 4))
    fwd = np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    cr, sr = math.cos(roll), math.sin(roll)
    right, down = cr * right + sr * down, -sr * right + cr * down
    return pos, np.stack([right, down, fwd], axis=1), math.radians(rng.uniform(*hfov_deg))


def _to_local(p: np.ndarray, c: np.ndarray, yaw: float) -> np.ndarray:
    d = p - c
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([cy * d[0] + sy * d[2], d[1], -sy * d[0] + cy * d[2]])
