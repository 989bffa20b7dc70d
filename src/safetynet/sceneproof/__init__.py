"""SceneProof: tell real RGB-D captures from fakes.

This package holds the data side: fake-pair generators (``fakes``), the small monocular depth
regressor behind the ``predicted_depth`` fake (``depth_regressor``) and the conversion of
frames to network inputs (``patches``). Readers and the scene simulator live in
:mod:`safetynet.data.rgbd`.

The detector itself: ``labels`` (REAL/FAKE, detector letters), ``network`` (the classifier
factory), ``frames`` (scene splits, frame sets, fakes of whole frames), ``sampling`` (patch
sets), ``fit`` (the training loop) and ``bundle`` (the saved :class:`SceneProof`); ``train``,
``evaluate`` and ``verify`` drive them.

The sensor-agnostic model that ``verify`` uses by default: ``features`` and
``alignment_features`` (camera-independent statistics of a whole frame), ``tree_export`` (the
boosted trees as plain arrays) and ``feature_model`` (the saved :class:`FeatureVerifier`);
``loso`` evaluates it leave-one-source-out and ``fit_features`` trains the shipped one.
"""

from .depth_regressor import (DepthRegressor, DepthRegressorConfig, load_depth_regressor, save_depth_regressor,
                              train_depth_regressor)
from .fakes import (FAKES, RANDOM_FAKES, TEST_ONLY_FAKES, TRAIN_FAKES, check_rgbd_batch, derangement,
                    down_up_sample, insert_region, insert_region_boxes, jpeg_degrade, make_fakes, predicted_depth,
                    rendered, shift_scale_depth, swap_depth, zero_depth)
from .patches import (DepthEncoding, augment_real, decode_depth, encode_depth, patch_positions, random_crop,
                      resize_batch, tile, tile_rgbd, to_network_input)

__all__ = [
    "FAKES", "RANDOM_FAKES", "TEST_ONLY_FAKES", "TRAIN_FAKES", "DepthEncoding", "DepthRegressor",
    "DepthRegressorConfig", "augment_real", "check_rgbd_batch", "decode_depth", "derangement", "down_up_sample",
    "encode_depth", "insert_region", "insert_region_boxes", "jpeg_degrade", "load_depth_regressor", "make_fakes",
    "patch_positions", "predicted_depth", "random_crop", "rendered", "resize_batch", "save_depth_regressor",
    "shift_scale_depth", "swap_depth", "tile", "tile_rgbd", "to_network_input", "train_depth_regressor",
    "zero_depth",
]
