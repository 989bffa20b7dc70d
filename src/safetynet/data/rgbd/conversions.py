"""Data sets' own depth encodings to metres: Middlebury disparity + calibration, SUN RGB-D's rotated
bits, NYU Depth v2's raw Kinect values. Pure array functions; :mod:`.formats` reads the files."""

from __future__ import annotations

import re

import numpy as np

from ...errors import DataError

__all__ = ["NYU_MAX_DEPTH", "NYU_RAW_INVALID", "disparity_to_depth", "nyu_raw_to_metres", "parse_middlebury_calib",
           "sun_decode"]

# NYU Depth v2 toolbox (camera_params.m, depth_rel2depth_abs.m): metres = 351.3 / (1092.5 - raw).
NYU_DEPTH_PARAM1 = 351.3
NYU_DEPTH_PARAM2 = 1092.5
NYU_MAX_DEPTH = 10.0
NYU_RAW_INVALID = 2047  # the Kinect's 11-bit "no reading" code


def parse_middlebury_calib(text: str, name: str = "calib.txt") -> dict[str, float]:
    """Parse the text of a Middlebury ``calib.txt``: focal length ``f`` (px), ``baseline`` (mm), ``doffs`` (px), ..."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        if key == "cam0":
            nums = re.findall(r"[-+0-9.eE]+", value)
            if len(nums) != 9:
                raise DataError(f"{name}: cam0 must be a 3x3 matrix, got {value!r}")
            out["f"], out["cx"], out["cy"] = float(nums[0]), float(nums[2]), float(nums[5])
        else:
            try:
                out[key] = float(value)
            except ValueError:
                continue
    missing = [k for k in ("f", "baseline", "doffs") if k not in out]
    if missing:
        raise DataError(f"Middlebury calibration {name} lacks {', '.join(missing)}; expected cam0=, doffs=, baseline=")
    return out


def disparity_to_depth(disparity: np.ndarray, calib: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Middlebury: depth [mm] = baseline * f / (d + doffs); returns (metres, valid)."""
    d = disparity.astype(np.float64)
    valid = np.isfinite(d) & (d > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = calib["baseline"] * calib["f"] / (d + calib["doffs"]) / 1000.0
    valid &= np.isfinite(depth) & (depth > 0)
    return np.where(valid, depth, 0.0), valid


def sun_decode(raw: np.ndarray) -> np.ndarray:
    """SUN RGB-D stores millimetres with the 16 bits rotated: mm = (v >> 3) | (v << 13), in 16 bits."""
    v = raw.astype(np.uint32)
    return (((v >> 3) | (v << 13)) & 0xFFFF).astype(np.uint16)


def nyu_raw_to_metres(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NYU Depth v2 raw Kinect values (already byte-swapped) to metres, as the NYU toolbox does.

    ``depth_rel2depth_abs.m``: ``351.3 ./ (1092.5 - raw)``. The toolbox clamps results above
    10 m to 10 m; here such pixels (and the 2047 "no reading" code) are marked invalid instead.
    """
    r = raw.astype(np.float64)
    valid = r < NYU_RAW_INVALID
    with np.errstate(divide="ignore"):
        depth = NYU_DEPTH_PARAM1 / (NYU_DEPTH_PARAM2 - r)
    valid &= (depth > 0) & (depth <= NYU_MAX_DEPTH)
    return np.where(valid, depth, 0.0), valid
