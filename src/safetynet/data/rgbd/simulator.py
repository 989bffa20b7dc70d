"""A random indoor RGB-D scene simulator: a batched ray-caster plus a Kinect-like depth sensor model.

:func:`simulate_scenes` draws random rooms and camera poses (:mod:`safetynet.data.rgbd.rooms`),
renders them (:mod:`safetynet.data.rgbd.raycast`: every pixel ray traced at once, Lambertian
shading with hard shadows) and measures them with a Kinect-like sensor
(:mod:`safetynet.data.rgbd.sensor`), and returns both the noise-free render and the simulated
capture (:class:`SimulatedScenes`).

``simulate_scenes(n, size, seed)`` is deterministic: frame ``i`` depends only on ``(seed, i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import InputError
from .frame import RGBDFrame
from .raycast import _render_chunk
from .rooms import _Room, _sample_camera, _sample_room
from .sensor import SensorModel, kinect_depth


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


def _scene_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *key]))


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


__all__ = ["SimulatedScenes", "simulate_scenes"]
