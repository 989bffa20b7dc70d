"""RGB-D data: typed frames, readers for the common file formats and data-set layouts, a simulator.

``load_real_frames(root)`` walks a folder of real captures (e.g. ``../shared/data/rgbd``) and
returns :class:`RGBDFrame` objects tagged with scene ids; ``read_frame``/``read_depth`` read
single files; ``simulate_scenes`` renders random indoor scenes with Kinect-like sensor depth.
"""

from .formats import (DepthFormat, check_pixels, depth_from_bytes, disparity_to_depth, image_from_bytes, nyu_raw_to_metres,
                      parse_middlebury_calib, read_depth, read_depth_array, read_dpt, read_image, read_middlebury_calib,
                      read_pfm, read_pgm16, read_png16, sniff_depth_format, sun_decode)
from .frame import RGBDFrame, make_frame, resize_rgbd, stack_frames
from .items import RENDERED_HINTS, RGBDItem, read_frame, read_intrinsics, read_item, read_items
from .layouts import (find_7scenes, find_pair_folder, find_prefix_pairs, find_suffix_pairs, load_7scenes,
                      load_middlebury, load_pair_folder, load_sintel)
from .nyu import find_nyu_folder, infer_depth_scale, load_nyu_folder, load_nyu_mat
from .tum import associate_timestamps, find_tum, load_tum, read_tum_list
from .walker import find_rgbd_items, load_real_frames, scene_counts

__all__ = [
    "DepthFormat", "RENDERED_HINTS", "RGBDFrame", "RGBDItem", "associate_timestamps", "check_pixels",
    "depth_from_bytes", "disparity_to_depth", "image_from_bytes", "parse_middlebury_calib", "sniff_depth_format",
    "find_7scenes", "find_nyu_folder", "find_pair_folder", "find_prefix_pairs", "find_rgbd_items",
    "find_suffix_pairs", "find_tum", "infer_depth_scale", "load_7scenes", "load_middlebury", "load_nyu_folder",
    "load_nyu_mat", "load_pair_folder", "load_real_frames", "load_sintel", "load_tum", "make_frame",
    "nyu_raw_to_metres", "read_depth", "read_depth_array", "read_dpt", "read_frame", "read_image",
    "read_intrinsics", "read_item", "read_items", "read_middlebury_calib", "read_pfm", "read_pgm16",
    "read_png16", "read_tum_list", "resize_rgbd", "scene_counts", "stack_frames", "sun_decode",
]
