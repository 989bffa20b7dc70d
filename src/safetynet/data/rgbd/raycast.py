"""The simulator's batched ray-caster: depth, normals, textures and shading of random rooms.

Every pixel ray is traced at once with tensor operations (the only Python loops run over the
few primitives, scenes in a chunk, and shadow-band offsets). Ray directions have unit
camera-z, so the hit distance ``t`` *is* the z-depth. One point light gives Lambertian shading
with hard shadows, plus ambient light. Rooms come from :mod:`safetynet.data.rgbd.rooms`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .rooms import _MAT_DIM, _N_WAVES, CHECKER, NOISE, STRIPES, _Room


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
