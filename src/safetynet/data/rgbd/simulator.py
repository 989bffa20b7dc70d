"""A random indoor RGB-D scene simulator: a batched ray-caster plus a Kinect-like depth sensor model.

Each scene is a room (floor, four walls, ceiling) holding furniture (boxes rotated about the
vertical axis, some stacked), spheres, a rug and pictures on the walls (thin boxes), all with
procedural textures (flat, stripes, checker, sum-of-sinusoids noise). A pinhole camera stands
at a random pose inside the room; one point light near the ceiling gives Lambertian shading
with hard shadows, plus ambient light.

Every pixel ray is traced at once with tensor operations (the only Python loops run over the
few primitives, scenes in a chunk, and shadow-band offsets). Ray directions have unit
camera-z, so the hit distance ``t`` *is* the z-depth.

The sensor model follows the structured-light Kinect (Khoshelham & Elberink 2012): noise of
constant spread in disparity (so depth noise grows with depth squared), disparity quantised
to 1/8 pixel, no reading beyond the range limits, at grazing angles, on very dark surfaces,
along depth discontinuities and in the projector's shadow beside near objects, plus a little
random dropout. Noise is expressed at the Kinect's native focal length (``sensor_focal``) so
its size in metres does not depend on the render resolution.

``simulate_scenes(n, size, seed)`` is deterministic: frame ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from .frame import RGBDFrame

# Material texture kinds.
FLAT, STRIPES, CHECKER, NOISE = 0, 1, 2, 3
_N_WAVES = 4  # sinusoids per material (noise uses all, stripes the first, checker the first two)
# Material parameter layout: c1(3) c2(3) kind(1) absorbing(1) then per wave: freq, cos, sin, phase.
_MAT_DIM = 8 + 4 * _N_WAVES


@dataclass(frozen=True)
class SimulatedScenes:
    """A batch of simulated frames.

    ``image``/``depth`` are the noise-free render (every pixel valid); ``sensor_image``,
    ``sensor_depth`` and ``sensor_valid`` imitate a capture (camera noise, Kinect depth).
    ``scene`` gives each frame's room id (views of one room share it).
    """

    image: torch.Tensor  # (N, 3, H, W) float32 [0, 1], noise-free render
    depth: torch.Tensor  # (N, 1, H, W) float32 metres, clean z-depth, all valid
    sensor_image: torch.Tensor  # (N, 3, H, W) float32 [0, 1], with camera noise, 8-bit quantised
    sensor_depth: torch.Tensor  # (N, 1, H, W) float32 metres, 0 = no reading
    sensor_valid: torch.Tensor  # (N, 1, H, W) bool
    intrinsics: torch.Tensor  # (N, 4) fx, fy, cx, cy in pixels
    cam_to_world: torch.Tensor  # (N, 4, 4), camera axes x right, y down, z forward; world y up
    scene: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.image.shape[0])

    def frames(self, sensor: bool = True) -> list[RGBDFrame]:
        """As :class:`RGBDFrame` objects: the simulated capture (``sensor=True``) or the clean render."""
        out = []
        for i in range(len(self)):
            if sensor:
                img, dep, val = self.sensor_image[i], self.sensor_depth[i], self.sensor_valid[i]
            else:
                img, dep, val = self.image[i], self.depth[i], torch.ones_like(self.sensor_valid[i])
            intr = tuple(float(v) for v in self.intrinsics[i])
            out.append(RGBDFrame(img, dep, val, source=f"simulated:{self.scene[i]}:{i}", scene=self.scene[i],
                                 intrinsics=intr))  # type: ignore[arg-type]
        return out


@dataclass(frozen=True)
class SensorModel:
    """Kinect-like depth sensor parameters (defaults: Kinect v1, Khoshelham & Elberink 2012)."""

    baseline: float = 0.075  # m, projector-camera distance
    sensor_focal: float = 580.0  # px at the sensor's native 640x480
    disparity_noise: float = 0.07  # px (native), std of disparity noise: sigma_z ~ 1.6e-3 z^2
    noise_correlation: float = 0.6  # share of the noise that is spatially smooth
    disparity_step: float = 1.0 / 8.0  # px (native), disparity quantisation
    min_range: float = 0.45  # m
    max_range: float = 8.0  # m
    grazing_deg: float = 78.0  # no reading beyond this angle of incidence
    edge_jump: float = 0.04  # relative depth jump between neighbours that counts as a discontinuity
    dropout: float = 0.004  # probability of an isolated missing pixel
    blob_fraction: float = 0.01  # approximate fraction of the image in blob-shaped holes
    dark_albedo: float = 0.05  # IR-absorbing materials darker than this give no reading


def _scene_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


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


def _pack(rooms: list[_Room]) -> dict[str, torch.Tensor]:
    """Pad the per-scene primitive lists into tensors with an ``active`` mask."""
    B = len(rooms)
    nb = max(1, max(len(r.boxes) for r in rooms))
    ns = max(1, max(len(r.spheres) for r in rooms))
    nm = max(len(r.materials) for r in rooms)
    box_c, box_h, box_yaw = np.zeros((B, nb, 3)), np.zeros((B, nb, 3)), np.zeros((B, nb))
    box_f, box_on = np.zeros((B, nb, 6), dtype=np.int64), np.zeros((B, nb), dtype=bool)
    sph_c, sph_r = np.zeros((B, ns, 3)), np.ones((B, ns))
    sph_m, sph_on = np.zeros((B, ns), dtype=np.int64), np.zeros((B, ns), dtype=bool)
    mats = np.zeros((B, nm, _MAT_DIM))
    room_L, room_f = np.zeros((B, 3)), np.zeros((B, 6), dtype=np.int64)
    light, amb, power = np.zeros((B, 3)), np.zeros(B), np.zeros(B)
    for i, r in enumerate(rooms):
        for j, (c, h, yaw, faces) in enumerate(r.boxes):
            box_c[i, j], box_h[i, j], box_yaw[i, j], box_f[i, j], box_on[i, j] = c, h, yaw, faces, True
        for j, (c, rad, m) in enumerate(r.spheres):
            sph_c[i, j], sph_r[i, j], sph_m[i, j], sph_on[i, j] = c, rad, m, True
        mats[i, : len(r.materials)] = np.stack(r.materials)
        room_L[i], room_f[i], light[i], amb[i], power[i] = r.size, r.room_faces, r.light, r.ambient, r.light_power
    f = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    return dict(box_c=f(box_c), box_h=f(box_h), box_cos=f(np.cos(box_yaw)), box_sin=f(np.sin(box_yaw)),
                box_f=torch.as_tensor(box_f), box_on=torch.as_tensor(box_on), sph_c=f(sph_c), sph_r=f(sph_r),
                sph_m=torch.as_tensor(sph_m), sph_on=torch.as_tensor(sph_on), mats=f(mats), room_L=f(room_L),
                room_f=torch.as_tensor(room_f), light=f(light), ambient=f(amb), power=f(power))


def _slab(o: torch.Tensor, d: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray/axis-aligned-box slabs in the box frame: (t_near, t_far), shapes (B, N)."""
    inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t1, t2 = (-h - o) * inv, (h - o) * inv
    return torch.minimum(t1, t2).amax(dim=-1), torch.maximum(t1, t2).amin(dim=-1)


def _rotate_y(v: torch.Tensor, c: torch.Tensor, s: torch.Tensor, inverse: bool) -> torch.Tensor:
    """Rotate (..., 3) vectors about y by yaw given as cos/sin broadcastable to v[..., 0]."""
    s = -s if inverse else s
    x, y, z = v.unbind(-1)
    return torch.stack([c * x - s * z, y, s * x + c * z], dim=-1)


def _box_face(p_local: torch.Tensor, h: torch.Tensor, inside: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal (local frame) and face index 2*axis+(normal>0) of the face of box ``h`` that holds ``p_local``.

    The face is the axis where the point is closest to the slab boundary; normals point
    outwards, or inwards for a box seen from inside (the room).
    """
    rel = p_local / h.clamp_min(1e-6)
    axis = rel.abs().argmax(dim=-1)
    comp = torch.gather(rel, -1, axis[..., None])[..., 0]
    sign = torch.where(comp > 0, 1.0, -1.0)
    if inside:
        sign = -sign
    return F.one_hot(axis, 3).to(p_local.dtype) * sign[..., None], axis * 2 + (sign > 0).long()


def _box_slabs(o: torch.Tensor, d: torch.Tensor, P: dict[str, torch.Tensor]):
    """Yield (t_near, t_far) of every box slot for rays o + t d; o is (B,1,3) or (B,N,3), d (B,N,3).

    Works on separate x/y/z component tensors: boxes rotate about y only, so the y slab needs
    no rotation and its reciprocal is shared by all boxes. A zero direction component gives
    +-inf slab bounds (IEEE), which the min/max logic handles.
    """
    dx, dy, dz = d.unbind(-1)
    iy = 1.0 / dy
    for j in range(P["box_c"].shape[1]):
        c, s = P["box_cos"][:, j, None], P["box_sin"][:, j, None]
        h = P["box_h"][:, j]
        rel = o - P["box_c"][:, None, j]
        ox = c * rel[..., 0] + s * rel[..., 2]
        oz = -s * rel[..., 0] + c * rel[..., 2]
        oy = rel[..., 1]
        ix = 1.0 / (c * dx + s * dz)
        iz = 1.0 / (c * dz - s * dx)
        hx, hy, hz = h[:, 0, None], h[:, 1, None], h[:, 2, None]
        ax, bx = (-hx - ox) * ix, (hx - ox) * ix
        ay, by = (-hy - oy) * iy, (hy - oy) * iy
        az, bz = (-hz - oz) * iz, (hz - oz) * iz
        tn = torch.maximum(torch.maximum(torch.minimum(ax, bx), torch.minimum(ay, by)), torch.minimum(az, bz))
        tf = torch.minimum(torch.minimum(torch.maximum(ax, bx), torch.maximum(ay, by)), torch.maximum(az, bz))
        yield tn, tf


def _trace(o: torch.Tensor, d: torch.Tensor, P: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Nearest hit for rays o (B,1,3) + t d (B,N,3): depth t, world normal, material id, texture uv.

    The loop over primitives only keeps the nearest ``t`` and which primitive gave it; normals,
    materials and texture coordinates are computed once afterwards for the winners.
    """
    B, N, _ = d.shape
    L = P["room_L"][:, None, :]
    # Room: the camera is inside, so the hit is where the ray leaves the box.
    _, t_best = _slab(o - L / 2, d, L / 2)
    who = torch.full((B, N), -1, dtype=torch.long)  # -1 room, j box j, nb + j sphere j
    nb, ns = P["box_c"].shape[1], P["sph_c"].shape[1]
    for j, (tn, tf) in enumerate(_box_slabs(o, d, P)):
        hit = (tn <= tf) & (tn > 1e-4) & (tn < t_best) & P["box_on"][:, j, None]
        t_best = torch.where(hit, tn, t_best)
        who = torch.where(hit, j, who)
    dd = (d * d).sum(-1)
    for j in range(ns):
        oc = o - P["sph_c"][:, None, j]
        r = P["sph_r"][:, j, None]
        b = (oc * d).sum(-1)
        disc = b * b - dd * ((oc * oc).sum(-1) - r * r)
        t = (-b - disc.clamp_min(0).sqrt()) / dd
        hit = (disc > 0) & (t > 1e-4) & (t < t_best) & P["sph_on"][:, j, None]
        t_best = torch.where(hit, t, t_best)
        who = torch.where(hit, nb + j, who)
    p = o + t_best[..., None] * d  # world hit points
    # Room hits.
    n_room, f_room = _box_face(p - L / 2, L / 2 + 0 * p, inside=True)
    mat = torch.gather(P["room_f"], 1, f_room)
    n_best, p_local = n_room, p - L / 2
    # Box hits: gather the winning box's parameters per pixel.
    is_box = (who >= 0) & (who < nb)
    if bool(is_box.any()):
        j = who.clamp(0, nb - 1)
        g3 = lambda a: torch.gather(a, 1, j[..., None].expand(B, N, 3))  # noqa: E731
        c, s = torch.gather(P["box_cos"], 1, j), torch.gather(P["box_sin"], 1, j)
        pl = _rotate_y(p - g3(P["box_c"]), c, s, inverse=True)
        nl, fj = _box_face(pl, g3(P["box_h"]), inside=False)
        mb = torch.gather(P["box_f"].reshape(B, -1), 1, j * 6 + fj)
        n_best = torch.where(is_box[..., None], _rotate_y(nl, c, s, inverse=False), n_best)
        mat = torch.where(is_box, mb, mat)
        p_local = torch.where(is_box[..., None], pl, p_local)
    is_sph = who >= nb
    if bool(is_sph.any()):
        j = (who - nb).clamp(0, ns - 1)
        pl = p - torch.gather(P["sph_c"], 1, j[..., None].expand(B, N, 3))
        r = torch.gather(P["sph_r"], 1, j)
        n_best = torch.where(is_sph[..., None], pl / r[..., None], n_best)
        mat = torch.where(is_sph, torch.gather(P["sph_m"], 1, j), mat)
        # Spheres: texture on (longitude * r, height) so stripes wrap around.
        p_sph = torch.stack([torch.atan2(pl[..., 0], pl[..., 2]) * r, pl[..., 1], torch.zeros_like(r)], -1)
        p_local = torch.where(is_sph[..., None], p_sph, p_local)
    # Texture coordinates: the two local coordinates in the plane of the dominant normal axis.
    ax = n_best.abs().argmax(-1)
    u = torch.where(ax == 0, p_local[..., 2], p_local[..., 0])
    v = torch.where(ax == 1, p_local[..., 2], p_local[..., 1])
    return dict(t=t_best, n=n_best, mat=mat, u=u, v=v)


def _occluded(p: torch.Tensor, to_light: torch.Tensor, P: dict[str, torch.Tensor]) -> torch.Tensor:
    """Whether anything (furniture, spheres) lies between p and the light; p, to_light (B, N, 3)."""
    shadow = torch.zeros(p.shape[:2], dtype=torch.bool)
    for j, (tn, tf) in enumerate(_box_slabs(p, to_light, P)):
        shadow |= (tn <= tf) & (tn > 1e-4) & (tn < 1.0) & P["box_on"][:, j, None]
    dd = (to_light * to_light).sum(-1)
    for j in range(P["sph_c"].shape[1]):
        oc = p - P["sph_c"][:, None, j]
        r = P["sph_r"][:, j, None]
        b = (oc * to_light).sum(-1)
        disc = b * b - dd * ((oc * oc).sum(-1) - r * r)
        t = (-b - disc.clamp_min(0).sqrt()) / dd
        shadow |= (disc > 0) & (t > 1e-4) & (t < 1.0) & P["sph_on"][:, j, None]
    return shadow


def _albedo(hit: dict[str, torch.Tensor], mats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Procedural texture lookup: (B, N, 3) albedo and (B, N) absorbing flag."""
    B, N = hit["mat"].shape
    m = torch.gather(mats, 1, hit["mat"][..., None].expand(B, N, _MAT_DIM))
    u, v = hit["u"], hit["v"]
    waves = []
    for k in range(_N_WAVES):
        f, c, s, ph = m[..., 8 + 4 * k], m[..., 9 + 4 * k], m[..., 10 + 4 * k], m[..., 11 + 4 * k]
        waves.append(torch.sin(2 * math.pi * f * (c * u + s * v) + ph))
    kind = m[..., 6]
    stripes = (waves[0] * 4).clamp(-1, 1) * 0.5 + 0.5
    checker = ((waves[0] > 0) ^ (waves[1] > 0)).float()
    noise = (sum(w / (1.6 ** k) for k, w in enumerate(waves)) / 1.9).clamp(-1, 1) * 0.5 + 0.5
    w = torch.where(kind == STRIPES, stripes, torch.where(kind == CHECKER, checker,
                                                          torch.where(kind == NOISE, noise, torch.zeros_like(u))))
    albedo = m[..., 0:3] * (1 - w[..., None]) + m[..., 3:6] * w[..., None]
    return albedo, m[..., 7] > 0.5


def _render_chunk(rooms: list[_Room], cams: list[tuple[np.ndarray, np.ndarray, float]], H: int, W: int,
                  shadows: bool) -> dict[str, torch.Tensor]:
    B = len(rooms)
    P = _pack(rooms)
    pos = torch.as_tensor(np.stack([c[0] for c in cams]), dtype=torch.float32)  # (B, 3)
    R = torch.as_tensor(np.stack([c[1] for c in cams]), dtype=torch.float32)  # (B, 3, 3)
    fx = torch.as_tensor([(W / 2) / math.tan(c[2] / 2) for c in cams], dtype=torch.float32)  # (B,)
    cx, cy = (W - 1) / 2, (H - 1) / 2
    vs, us = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    dir_cam = torch.stack([(us.reshape(-1)[None] - cx) / fx[:, None], (vs.reshape(-1)[None] - cy) / fx[:, None],
                           torch.ones(B, H * W)], dim=-1)  # (B, N, 3), camera z = 1
    d = dir_cam @ R.transpose(1, 2)  # world directions, (B, N, 3)
    o = pos[:, None, :]
    hit = _trace(o, d, P)
    t, n = hit["t"], hit["n"]
    p = o + t[..., None] * d
    to_light = P["light"][:, None, :] - p
    dist = to_light.norm(dim=-1).clamp_min(1e-3)
    ndotl = ((n * to_light).sum(-1) / dist).clamp_min(0)
    vis = (~_occluded(p + 1e-3 * n, to_light, P)).float() if shadows else torch.ones_like(t)
    albedo, absorbing = _albedo(hit, P["mats"])
    light = P["ambient"][:, None] + P["power"][:, None] * ndotl * vis / (1 + (dist / 3.0) ** 2)
    radiance = albedo * light[..., None]  # (B, N, 3), linear
    # Auto-exposure: the 98th percentile maps to 0.9, then display gamma.
    q = torch.quantile(radiance.reshape(B, -1)[:, ::7], 0.98, dim=1).clamp_min(1e-3)
    image = (radiance / q[:, None, None] * 0.9).clamp(0, 1) ** (1 / 2.2)
    cos_inc = ((n * d).sum(-1).abs() / d.norm(dim=-1))
    to_img = lambda x: x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    lum = (albedo * torch.tensor([0.3, 0.59, 0.11])).sum(-1)
    cam = torch.eye(4).repeat(B, 1, 1)
    cam[:, :3, :3], cam[:, :3, 3] = R, pos
    return dict(image=to_img(image), depth=to_img(t[..., None]), cos_inc=to_img(cos_inc[..., None]),
                dark=to_img((absorbing & (lum < 0.5)).float()[..., None]) > 0.5, fx=fx, cam=cam)


def kinect_depth(depth: torch.Tensor, cos_incidence: torch.Tensor, fx: torch.Tensor, generator: torch.Generator,
                 sensor: SensorModel | None = None, dark: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kinect-like sensor depth from clean z-depth (B,1,H,W); ``fx`` (B,) is the render focal length.

    Returns (depth with 0 = no reading, valid). See the module docstring for the model.
    """
    sensor = sensor or SensorModel()
    B, _, H, W = depth.shape
    z = depth.clamp_min(1e-3)
    fb = sensor.sensor_focal * sensor.baseline
    disp = fb / z  # native-resolution disparity, px
    white = torch.randn(depth.shape, generator=generator)
    low = torch.randn((B, 1, max(1, H // 4), max(1, W // 4)), generator=generator)
    smooth = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
    smooth = smooth / smooth.flatten(1).std(dim=1).clamp_min(1e-6).view(B, 1, 1, 1)
    rho = sensor.noise_correlation
    noise = math.sqrt(1 - rho * rho) * white + rho * smooth
    disp_q = torch.round((disp + sensor.disparity_noise * noise) / sensor.disparity_step) * sensor.disparity_step
    valid = disp_q > 0
    out = fb / disp_q.clamp_min(1e-6)
    valid &= (depth >= sensor.min_range) & (depth <= sensor.max_range)
    valid &= cos_incidence >= math.cos(math.radians(sensor.grazing_deg))
    if dark is not None:
        valid &= ~dark
    # Discontinuities: a relative jump to a 4-neighbour, widened by one pixel (raggedly).
    pad = F.pad(z, (1, 1, 1, 1), mode="replicate")
    jump = torch.zeros_like(z, dtype=torch.bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = pad[:, :, dy:dy + H, dx:dx + W]
        jump |= (nb - z).abs() > sensor.edge_jump * torch.minimum(nb, z)
    grown = F.max_pool2d(jump.float(), 3, stride=1, padding=1) > 0
    ragged = torch.rand(depth.shape, generator=generator) < 0.5
    valid &= ~(jump | (grown & ragged))
    # Projector shadow: the projector sits `baseline` to the right of the camera, so background
    # just right of a near object's edge receives no pattern. Pixel x is shadowed if some pixel
    # k to its left has a disparity larger by more than k (render-resolution pixels).
    disp_r = fx.view(B, 1, 1, 1) * sensor.baseline / z
    kmax = int(min(48, math.ceil(float(disp_r.max() - disp_r.min()))))
    shadow = torch.zeros_like(valid)
    for k in range(1, kmax + 1):
        left = F.pad(disp_r, (k, 0))[..., :W]
        shadow |= left - k >= disp_r
    valid &= ~shadow
    # Random dropout: isolated pixels and a few blobs.
    valid &= torch.rand(depth.shape, generator=generator) >= sensor.dropout
    if sensor.blob_fraction > 0:
        blobs = torch.rand((B, 1, max(1, H // 8), max(1, W // 8)), generator=generator)
        blobs = F.interpolate(blobs, size=(H, W), mode="bilinear", align_corners=False)
        valid &= blobs < 1 - 4 * sensor.blob_fraction  # the upsampled maximum regions stay small
    return torch.where(valid, out, torch.zeros_like(out)), valid


def simulate_scenes(n: int, size: tuple[int, int] = (128, 128), seed: int = 0, *, views_per_scene: int = 1,
                    max_boxes: int = 5, max_spheres: int = 3, max_pictures: int = 3, shadows: bool = True,
                    hfov_deg: tuple[float, float] = (55.0, 70.0), image_noise: float = 0.012,
                    sensor: SensorModel | None = None, chunk: int | None = None) -> SimulatedScenes:
    """Render ``n`` random indoor RGB-D frames of ``size = (H, W)``; frame ``i`` depends only on ``(seed, i)``.

    ``views_per_scene`` consecutive frames share a room (different camera poses). Returns the
    clean render and a simulated capture (Kinect-like depth, noisy 8-bit colour).
    """
    if not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    H, W = int(size[0]), int(size[1])
    if H < 8 or W < 8:
        raise InputError(f"size must be at least 8x8, got {size}")
    if not isinstance(views_per_scene, int) or views_per_scene < 1:
        raise InputError(f"views_per_scene must be a positive integer, got {views_per_scene!r}")
    chunk = chunk or max(1, min(n, (1 << 18) // (H * W)))
    outs: dict[str, list[torch.Tensor]] = {k: [] for k in ("image", "depth", "sensor_image", "sensor_depth",
                                                         "sensor_valid", "intr", "cam")}
    scenes = []
    rooms: dict[int, _Room] = {}
    for start in range(0, n, chunk):
        idx = list(range(start, min(n, start + chunk)))
        batch_rooms, cams = [], []
        for i in idx:
            s = i // views_per_scene
            if s not in rooms:
                rooms = {s: _sample_room(_scene_rng(seed, 0, s), max_boxes, max_spheres, max_pictures)}
            batch_rooms.append(rooms[s])
            cams.append(_sample_camera(_scene_rng(seed, 1, i), rooms[s], hfov_deg))
            scenes.append(f"sim-{seed}-{s}")
        r = _render_chunk(batch_rooms, cams, H, W, shadows)
        gens = [torch.Generator().manual_seed(int(_scene_rng(seed, 2, i).integers(2 ** 62))) for i in idx]
        sd, sv, si = [], [], []
        for k, g in enumerate(gens):  # per frame, so frame i's noise does not depend on the chunking
            dk, vk = kinect_depth(r["depth"][k:k + 1], r["cos_inc"][k:k + 1], r["fx"][k:k + 1], g, sensor,
                                  r["dark"][k:k + 1])
            noisy = r["image"][k:k + 1] + image_noise * torch.randn((1, 3, H, W), generator=g)
            sd.append(dk)
            sv.append(vk)
            si.append(torch.round(noisy.clamp(0, 1) * 255) / 255)
        outs["image"].append(r["image"])
        outs["depth"].append(r["depth"])
        outs["sensor_depth"].append(torch.cat(sd))
        outs["sensor_valid"].append(torch.cat(sv))
        outs["sensor_image"].append(torch.cat(si))
        fx = r["fx"]
        outs["intr"].append(torch.stack([fx, fx, torch.full_like(fx, (W - 1) / 2), torch.full_like(fx, (H - 1) / 2)], 1))
        outs["cam"].append(r["cam"])
    cat = {k: torch.cat(v) for k, v in outs.items()}
    return SimulatedScenes(image=cat["image"], depth=cat["depth"], sensor_image=cat["sensor_image"],
                           sensor_depth=cat["sensor_depth"], sensor_valid=cat["sensor_valid"],
                           intrinsics=cat["intr"], cam_to_world=cat["cam"], scene=tuple(scenes))
