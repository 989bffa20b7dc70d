"""``safetynet sceneproof verify IMAGE DEPTH``: is this RGB-D pair a real capture?

Pipeline: read the pair (colour PNG/JPG; depth as 16-bit PNG/PGM in ``depth_scale`` units per
metre, default millimetres, ``.npy`` in metres, Middlebury PFM or Sintel ``.dpt``), check that
image and depth have the same size, centre-crop to the working aspect ratio (4:3 by default) and
resize to the working resolution (image bilinear, depth nearest), cut the fixed grid of patches
the classifier was validated on, then classify every patch and run detectors A, B and C.

Aggregation rule (one verdict per pair):

1. a patch is *rejected* when any of the detectors A (fc7), B (fc6), C (pool5) fires at its
   calibrated threshold (thresholds give 5 % false rejections per detector on natural
   validation patches);
2. the pair is **rejected (adversarial)** when more than ``reject_fraction`` of its patches are
   rejected (default 0.5: a natural pair has most patches accepted);
3. otherwise the *real score* is the mean P(real) over the accepted patches, and the pair is
   **real** when the score exceeds ``real_threshold``, calibrated on the validation split
   (real frames vs fakes of the training kinds) to maximise balanced accuracy; else **fake**.

A patch with less than ``min_valid_fraction`` (default 2 %) of valid depth pixels carries no
depth evidence, and SceneProof certifies "real" only with depth evidence: its P(real) counts as
0 (its classifier output is still reported). A pair without depth therefore comes out fake.

Default model: the sensor-agnostic feature model (:mod:`.feature_model`), chosen by the
leave-one-source-out report (docs/results/sceneproof-loso/): it judges the whole frame from
camera-independent statistics, so it has no patches and no detectors; a frame is **real** when
its real score (1 - P(fake)) is at least the threshold, otherwise **fake**, and a frame with less
than ``min_valid`` of its pixels with depth is fake with ``abstained`` true ("not enough depth
evidence"). ``--model cnn`` (or the path of a CNN bundle) uses the paper's network and the
patch rule above.

Exit codes of the CLI (:mod:`safetynet.exit_codes`): 0 real, 1 fake, 4 rejected as adversarial,
3 bad input (2 stays argparse's usage error, so a typo is never mistaken for an attack).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..cli_config import setting
from ..errors import InputError
from ..exit_codes import EXIT_BAD_INPUT, EXIT_FAKE, EXIT_REAL, EXIT_REJECTED
from .bundle import SceneProof
from .feature_model import FeatureVerifier, is_feature_model
from .frames import FrameSet
from .labels import DETECTOR_LAYERS
from .sampling import grid_patches
from .patches import to_network_input

REAL_VERDICT, FAKE_VERDICT, REJECTED_VERDICT = "real", "fake", "rejected (adversarial)"
MIN_SIDE = 64  # the feature model's smallest input side, as the CNN's patch: smaller frames would be upsampled, not judged
EXIT_CODES = {REAL_VERDICT: EXIT_REAL, FAKE_VERDICT: EXIT_FAKE, REJECTED_VERDICT: EXIT_REJECTED}


@dataclass
class VerifyConfig:
    """``safetynet sceneproof verify IMAGE DEPTH``."""

    image: str = setting(help="colour image (PNG/JPG)", positional=True)
    depth: str = setting(help="depth map: 16-bit PNG/PGM, .npy (metres), Middlebury .pfm or Sintel .dpt", positional=True)
    model: str | None = setting(None, "model folder: a feature model or a CNN bundle; 'cnn' = the shipped CNN bundle "
                                      "(the paper's network); default: the shipped feature model")
    depth_scale: float | None = setting(None, "stored depth units per metre (default 1000 = millimetres for PNG/PGM, "
                                              "1 for .npy/.dpt; not used for .pfm)")
    depth_format: str | None = setting(None, "override the depth format (png, pgm, npy, pfm, dpt, sun, nyu-raw)")


@dataclass
class Verdict:
    """The outcome for one RGB-D pair; ``to_dict()`` is the ``--json`` output."""

    verdict: str  # "real" | "fake" | "rejected (adversarial)"
    real_score: float | None  # mean P(real) of accepted patches (None when every patch is rejected)
    real_threshold: float
    rejected_fraction: float
    reject_fraction: float  # the limit above which the pair is rejected
    n_patches: int
    patches: list[dict[str, Any]] = field(default_factory=list)  # per-patch evidence
    image_size: tuple[int, int] = (0, 0)  # (H, W) as read
    working_size: tuple[int, int] = (0, 0)  # (H, W) after crop + resize
    model: str = ""
    abstained: bool = False  # the feature model found too little depth to judge ("not enough depth evidence")
    model_kind: str = "cnn"  # "cnn" (patches + detectors A/B/C) or "features" (whole frame, no patches)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exit_code"] = self.exit_code
        d["image_size"] = list(self.image_size)
        d["working_size"] = list(self.working_size)
        return d

    def summary(self) -> str:
        score = "n/a" if self.real_score is None else f"{self.real_score:.3f}"
        if self.model_kind == "features":
            why = "not enough depth evidence, " if self.abstained else ""
            return f"{self.verdict}: {why}real score {score} (threshold {self.real_threshold:.3f}), whole-frame feature model"
        return (f"{self.verdict}: real score {score} (threshold {self.real_threshold:.3f}), "
                f"{self.rejected_fraction:.0%} of {self.n_patches} patches rejected as adversarial "
                f"(limit {self.reject_fraction:.0%})")


def decide(p_real: np.ndarray, rejected: np.ndarray, reject_fraction: float, real_threshold: float
           ) -> tuple[str, float | None, float]:
    """The aggregation rule (module docstring): returns (verdict, real score, rejected fraction)."""
    p_real = np.asarray(p_real, dtype=np.float64)
    rejected = np.asarray(rejected, dtype=bool)
    if p_real.ndim != 1 or p_real.shape != rejected.shape or p_real.size == 0:
        raise InputError("decide needs equal-length, non-empty p_real and rejected arrays")
    frac = float(rejected.mean())
    accepted = ~rejected
    score = float(p_real[accepted].mean()) if accepted.any() else None
    if frac > reject_fraction or score is None:
        return REJECTED_VERDICT, score, frac
    return (REAL_VERDICT if score > real_threshold else FAKE_VERDICT), score, frac


def crop_to_aspect(image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, aspect: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre-crop (..., H, W) tensors to width / height = ``aspect`` (no resampling)."""
    H, W = image.shape[-2:]
    if W / H > aspect + 1e-6:
        w = max(1, round(H * aspect))
        x0 = (W - w) // 2
        return image[..., x0:x0 + w], depth[..., x0:x0 + w], valid[..., x0:x0 + w]
    if W / H < aspect - 1e-6:
        h = max(1, round(W / aspect))
        y0 = (H - h) // 2
        return image[..., y0:y0 + h, :], depth[..., y0:y0 + h, :], valid[..., y0:y0 + h, :]
    return image, depth, valid


def prepare_frames(bundle: SceneProof, image: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch (B, 3|1, H, W) at any size -> working resolution (centre crop to the aspect, then resize)."""
    from ..data.rgbd.frame import resize_rgbd

    H, W = bundle.size
    min_side = getattr(bundle, "patch", MIN_SIDE)
    if min(image.shape[-2:]) < min_side:
        raise InputError(f"the frame is {image.shape[-1]}x{image.shape[-2]} pixels; SceneProof needs at least "
                         f"{min_side} pixels on each side")
    image, depth, valid = crop_to_aspect(image, depth, valid, W / H)
    return resize_rgbd(image.contiguous(), depth.contiguous(), valid.contiguous(), (H, W))


def frame_evidence(bundle: SceneProof, frames: FrameSet, batch_size: int = 512) -> list[dict[str, np.ndarray]]:
    """Per frame: grid positions, P(real), thresholded detector margins and rejection of every patch.

    ``frames`` must already be at the working resolution.
    """
    x = to_network_input(frames.image, frames.depth, frames.valid)
    patches, idx, pos = grid_patches(x, bundle.patch, bundle.stride)
    p_parts, s_parts = [], {ch: [] for ch in DETECTOR_LAYERS}
    for i in range(0, len(patches), batch_size):
        a = bundle.analyze(patches[i:i + batch_size])
        p_parts.append(a.p_real)
        for ch in DETECTOR_LAYERS:
            s_parts[ch].append(a.scores[ch])
    p_model = np.concatenate(p_parts)
    s = {ch: np.concatenate(v) for ch, v in s_parts.items()}
    valid_frac = (patches[:, 3] > 0).flatten(1).float().mean(1).numpy()
    # No depth evidence, no certificate: see the module docstring.
    p = np.where(valid_frac < float(bundle.settings.get("min_valid_fraction", 0.02)), 0.0, p_model)
    out = []
    for b in range(len(frames)):
        m = idx == b
        scores = {ch: s[ch][m] for ch in DETECTOR_LAYERS}
        rejected = np.zeros(int(m.sum()), dtype=bool)
        for ch in DETECTOR_LAYERS:
            rejected |= scores[ch] > 0
        out.append({"positions": np.asarray(pos), "p_real": p[m], "p_model": p_model[m], "valid": valid_frac[m],
                    "scores": scores, "rejected": rejected})
    return out


def verify_frames(bundle: SceneProof, frames: FrameSet, *, reject_fraction: float | None = None,
                  real_threshold: float | None = None) -> list[Verdict]:
    """Verdicts for frames already at the working resolution (used by evaluation and calibration)."""
    rf = float(bundle.settings["reject_fraction"] if reject_fraction is None else reject_fraction)
    rt = float(bundle.settings["real_threshold"] if real_threshold is None else real_threshold)
    out = []
    for ev in frame_evidence(bundle, frames):
        verdict, score, frac = decide(ev["p_real"], ev["rejected"], rf, rt)
        patches = [{"y": int(y), "x": int(x), "p_real": round(float(p), 4),
                    "p_real_classifier": round(float(ev["p_model"][k]), 4),
                    "valid_depth": round(float(ev["valid"][k]), 4), "rejected": bool(r),
                    "detector_margins": {ch: round(float(ev["scores"][ch][k]), 4) for ch in DETECTOR_LAYERS}}
                   for k, ((y, x), p, r) in enumerate(zip(ev["positions"], ev["p_real"], ev["rejected"]))]
        out.append(Verdict(verdict, score, rt, frac, rf, len(patches), patches, working_size=bundle.size,
                           model=str(bundle.directory or "")))
    return out


def verify_frames_features(model: FeatureVerifier, frames: FrameSet) -> list[Verdict]:
    """Verdicts of the feature model for frames already at its working resolution."""
    from .feature_model import feature_matrix

    X = feature_matrix(frames)
    p = model.p_fake(X)
    enough = model.enough_depth(X)
    thr = model.threshold
    return [Verdict(REAL_VERDICT if (enough[i] and p[i] <= thr) else FAKE_VERDICT, round(1.0 - float(p[i]), 6),
                    round(1.0 - thr, 6), 0.0, 1.0, 0, [], working_size=model.size, model=str(model.directory or ""),
                    abstained=not bool(enough[i]), model_kind="features")
            for i in range(len(frames))]


def load_verifier(model_dir: str | os.PathLike[str] | None = None) -> SceneProof | FeatureVerifier:
    """The model ``verify`` uses: the shipped feature model (None), the shipped CNN bundle ('cnn'),
    or the folder given (a feature model if it holds one, else a CNN bundle)."""
    from .bundle import default_model_dir

    if model_dir is None:
        return FeatureVerifier.load()
    if str(model_dir) == "cnn":
        return SceneProof.load(default_model_dir())
    return FeatureVerifier.load(model_dir) if is_feature_model(model_dir) else SceneProof.load(model_dir)


def check_depth_scale(depth_scale: float | None, label: str = "--depth-scale") -> None:
    """``depth_scale`` must be None or a positive, finite number (``label`` names it in the message)."""
    if depth_scale is not None and (isinstance(depth_scale, bool) or not isinstance(depth_scale, (int, float))
                                    or not np.isfinite(depth_scale) or depth_scale <= 0):
        raise InputError(f"{label} must be a positive number of stored units per metre (1000 for millimetres), "
                         f"got {depth_scale!r}")


def verify_arrays(bundle: SceneProof | FeatureVerifier, image: np.ndarray, depth: np.ndarray, valid: np.ndarray, *,
                  image_name: str = "image", depth_name: str = "depth") -> Verdict:
    """Verify one decoded pair: image uint8 (H, W, 3), depth float metres (H, W), valid bool (H, W).

    The one path behind :func:`verify` (files), :func:`verify_bytes` and the HTTP service; the
    names only label error messages.
    """
    from ..data.rgbd.frame import make_frame
    from ..errors import DataError

    if depth.shape != image.shape[:2]:
        raise DataError(f"image {image_name} is {image.shape[1]}x{image.shape[0]} but depth {depth_name} is "
                        f"{depth.shape[1]}x{depth.shape[0]}; give the depth map registered to this image, at its size")
    frame = make_frame(image, depth, valid, source=f"{image_name}|{depth_name}")
    image_t, depth_t, valid_t = prepare_frames(bundle, frame.image[None], frame.depth[None], frame.valid[None])
    fs = FrameSet(image_t, depth_t, valid_t, ["input"], [frame.source])
    v = verify_frames_features(bundle, fs)[0] if isinstance(bundle, FeatureVerifier) else verify_frames(bundle, fs)[0]
    v.image_size = (frame.height, frame.width)
    return v


def verify_bytes(image: bytes, depth: bytes, bundle: SceneProof | FeatureVerifier, depth_scale: float | None = None, *,
                 image_name: str = "image", depth_name: str = "depth", depth_format: str | None = None,
                 calib: str | None = None, max_pixels: int | None = None,
                 image_formats: Sequence[str] | None = None, depth_scale_label: str = "depth_scale",
                 missing_calib: str = "was not given; pass it as calib") -> Verdict:
    """Verify a pair held in memory (e.g. an upload): no temporary file is written.

    ``depth_name``'s suffix picks the depth format unless ``depth_format`` is given (else it is
    sniffed from the bytes); ``calib`` is the text of a Middlebury ``calib.txt`` for PFM
    disparity; ``max_pixels`` refuses either picture, from its header, before it is decoded
    (:class:`~safetynet.errors.LimitError`); ``image_formats`` restricts the image decoders
    (e.g. ``("PNG", "JPEG")``).
    """
    from ..data.rgbd.formats import depth_from_bytes, image_from_bytes

    check_depth_scale(depth_scale, depth_scale_label)
    img = image_from_bytes(image, image_name, max_pixels=max_pixels, formats=image_formats)
    dep, valid = depth_from_bytes(depth, depth_name, depth_scale, format=depth_format, calib=calib,
                              max_pixels=max_pixels, missing_calib=missing_calib)
    return verify_arrays(bundle, img, dep, valid, image_name=image_name, depth_name=depth_name)


def verify(image_path: str | os.PathLike[str], depth_path: str | os.PathLike[str],
           model_dir: str | os.PathLike[str] | None = None, depth_scale: float | None = None, *,
           depth_format: str | None = None, bundle: SceneProof | FeatureVerifier | None = None) -> Verdict:
    """Verify one RGB-D pair; raises :class:`~safetynet.errors.SafetyNetError` subclasses on bad input.

    ``depth_scale`` is stored units per metre (default: 1000 for PNG/PGM, 1 for ``.npy``/``.dpt``;
    not used for PFM); ``model_dir``: see :func:`load_verifier` (default: the shipped feature model).
    """
    from ..data.rgbd.formats import read_depth_array, read_image

    check_depth_scale(depth_scale)
    bundle = bundle if bundle is not None else load_verifier(model_dir)
    img = read_image(image_path)  # the same decoders as verify_bytes, on the file's bytes
    depth, valid = read_depth_array(depth_path, depth_scale, format=depth_format)
    return verify_arrays(bundle, img, depth, valid, image_name=str(image_path), depth_name=str(depth_path))


def calibrate_real_threshold(real_scores: Sequence[float], fake_scores: Sequence[float]) -> tuple[float, float]:
    """Threshold on the real score maximising balanced accuracy (real if score > t); returns (t, accuracy).

    Candidates are midpoints between consecutive distinct scores (and the ends); ties go to the
    candidate closest to 0.5.
    """
    r = np.asarray([s for s in real_scores if s is not None], dtype=np.float64)
    f = np.asarray([s for s in fake_scores if s is not None], dtype=np.float64)
    if r.size == 0 or f.size == 0:
        raise InputError("calibrating the real threshold needs scored real and fake validation frames")
    vals = np.unique(np.concatenate([r, f]))
    cands = np.concatenate([[vals[0] - 1e-6], (vals[:-1] + vals[1:]) / 2, [vals[-1]]])
    best_t, best_acc = 0.5, -1.0
    for t in cands:
        acc = 0.5 * ((r > t).mean() + (f <= t).mean())
        if acc > best_acc + 1e-12 or (abs(acc - best_acc) <= 1e-12 and abs(t - 0.5) < abs(best_t - 0.5)):
            best_t, best_acc = float(t), float(acc)
    return best_t, best_acc


__all__ = ["EXIT_BAD_INPUT", "EXIT_CODES", "EXIT_FAKE", "EXIT_REAL", "EXIT_REJECTED", "FAKE_VERDICT", "REAL_VERDICT", "REJECTED_VERDICT", "Verdict", "VerifyConfig",
           "calibrate_real_threshold", "check_depth_scale", "crop_to_aspect", "decide", "frame_evidence",
           "load_verifier", "prepare_frames", "verify_frames_features", "verify", "verify_arrays", "verify_bytes", "verify_frames"]
