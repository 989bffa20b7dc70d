"""Models: layer names and shapes, VGG19's torchvision layout, checkpoint round trips and errors,
and the pretrained registry (sha256 check before loading; the shipped ResNet-20's accuracy)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from safetynet._io import sha256_file
from safetynet.errors import CheckpointError, InputError
from safetynet.models import build_model, load_checkpoint, save_checkpoint
from safetynet.models.checkpoint import CONFIG, WEIGHTS
from safetynet.models.pretrained import available_pretrained, load_pretrained, pretrained_info, read_registry
from safetynet.models.small import SmallCNN
from safetynet.models.vgg import CifarVGG
from safetynet.models.vgg19 import VGG19
from safetynet.taps import extract_activations, forward_with_taps

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "src" / "safetynet" / "weights" / "cifar10-resnet20"

# Small configurations, so every test here runs in well under a second (VGG19 aside).
SMALL_CONFIGS = [
    {"arch": "resnet20"},
    {"arch": "vgg", "width": 8, "hidden": 32},
    {"arch": "vgg", "width": 4, "hidden": 16, "depth": 16, "in_channels": 4, "mean": [0.5] * 4,
     "std": [0.25] * 4, "dropout": 0.5, "pool_size": 2},
    {"arch": "smallcnn"},
]
INPUT_SHAPES = {"resnet20": (3, 32, 32), "vgg": (3, 32, 32), "smallcnn": (1, 8, 8)}


def _input(cfg: dict, n: int = 4) -> torch.Tensor:
    shape = INPUT_SHAPES[cfg["arch"]]
    if "in_channels" in cfg:
        shape = (cfg["in_channels"], *shape[1:])
    return torch.rand(n, *shape)


def _with_bn_statistics(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Move BatchNorm running statistics away from their defaults, so a round trip must carry them."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(x)
    return model.eval()


# ----------------------------------------------------------------------------- CifarVGG
def test_cifar_vgg_layers_and_taps():
    model = CifarVGG(width=8, hidden=32).eval()
    assert model.late_relus == ("pool5", "fc6", "fc7")
    assert isinstance(model.pool5, nn.AdaptiveMaxPool2d)
    assert isinstance(model.fc6, nn.ReLU) and isinstance(model.fc7, nn.ReLU)
    x = torch.rand(3, 3, 32, 32)
    logits, acts = forward_with_taps(model, x, model.late_relus)
    assert logits.shape == (3, 10)
    assert acts["pool5"].shape == (3, 64, 1, 1)
    assert acts["fc6"].shape == (3, 32) and acts["fc7"].shape == (3, 32)
    # the taps are the activations the names promise, recomputed by hand from the linear layers
    assert torch.allclose(acts["fc6"], F.relu(model.fc6_linear(acts["pool5"].flatten(1))))
    assert torch.allclose(acts["fc7"], F.relu(model.fc7_linear(acts["fc6"])))
    assert torch.allclose(logits, model.fc8(acts["fc7"]))
    # pool5 is the max over the 2x2 map left after four poolings of a 32x32 input
    conv5 = model.block5(model.features(model.normalize(x)))
    assert conv5.shape == (3, 64, 2, 2)
    assert torch.equal(acts["pool5"], conv5.amax(dim=(2, 3), keepdim=True))


def test_cifar_vgg_parameter_count_by_hand():
    # width 8: channels 8, 16, 32, 64, 64; VGG-11 blocks (1, 1, 2, 2, 2); convs without bias (BatchNorm)
    convs = 3 * 8 * 9 + 8 * 16 * 9 + 16 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9 + 2 * 64 * 64 * 9
    bns = 2 * (8 + 16 + 32 + 32 + 64 + 64 + 64 + 64)
    fcs = (64 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)
    model = CifarVGG(width=8, hidden=16)
    assert sum(p.numel() for p in model.parameters()) == convs + bns + fcs
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 8  # VGG-11 has 8 conv layers
    assert sum(isinstance(m, nn.Conv2d) for m in CifarVGG(width=4, depth=19).modules()) == 16


@pytest.mark.parametrize("size", [32, 48, 64])
def test_cifar_vgg_any_size_at_least_32(size):
    model = CifarVGG(width=4, hidden=8, pool_size=2).eval()
    _, acts = forward_with_taps(model, torch.rand(2, 3, size, size), ["pool5"])
    assert acts["pool5"].shape == (2, 32, 2, 2)


def test_cifar_vgg_four_channels_and_dropout():
    model = CifarVGG(in_channels=4, width=4, hidden=16, dropout=0.5, mean=(0.5,) * 4, std=(0.25,) * 4)
    x = torch.rand(8, 4, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is active in training
    model.eval()
    assert torch.equal(model(x), model(x))
    assert torch.allclose(model.normalize(x), (x - 0.5) / 0.25)
    with pytest.raises(InputError, match="mean and std"):
        CifarVGG(in_channels=4)
    with pytest.raises(InputError, match="depth"):
        CifarVGG(depth=12)
    with pytest.raises(InputError, match="dropout"):
        CifarVGG(dropout=1.0)


# ----------------------------------------------------------------------------- SmallCNN
def test_small_cnn_on_digits():
    from safetynet.data import load_digits

    data = load_digits("test")
    model = SmallCNN().eval()
    assert model.late_relus == ("relu2", "fc1")
    assert isinstance(model.fc1, nn.ReLU)
    logits, acts = extract_activations(model, data.images[:64], model.late_relus, batch_size=32)
    assert logits.shape == (64, 10)
    assert acts["relu2"].shape == (64, 32 * 8 * 8) and acts["fc1"].shape == (64, 64)
    assert (acts["fc1"] >= 0).all()
    # hand count: conv1 1->16, conv2 16->32 (3x3, bias), fc1 512->64, fc2 64->10
    expected = (9 * 16 + 16) + (16 * 32 * 9 + 32) + (512 * 64 + 64) + (64 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    # the normalisation constants are the digits' statistics
    x = data.images
    assert abs(model.normalize(x).mean().item()) < 0.05 and abs(model.normalize(x).std().item() - 1) < 0.05


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("cfg", SMALL_CONFIGS, ids=["resnet20", "vgg", "vgg-rgbd", "smallcnn"])
def test_checkpoint_round_trip_is_exact(tmp_path, cfg):
    kwargs = {k: v for k, v in cfg.items() if k != "arch"}
    model = _with_bn_statistics(build_model(cfg["arch"], **kwargs), _input(cfg, 16))
    save_checkpoint(model, tmp_path / "ckpt", cfg, extra={"note": "test"})
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG, WEIGHTS]
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["model"] == json.loads(json.dumps(cfg)) and meta["note"] == "test"
    assert not loaded.training
    assert type(loaded) is type(model) and loaded.late_relus == model.late_relus
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = _input(cfg, 5)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def _small_ckpt(tmp_path: Path, cfg: dict | None = None) -> Path:
    cfg = cfg or {"arch": "smallcnn"}
    model = build_model(cfg["arch"], **{k: v for k, v in cfg.items() if k != "arch"})
    return save_checkpoint(model, tmp_path / "ckpt", cfg)


def _edit_config(d: Path, fn) -> None:
    meta = json.loads((d / CONFIG).read_text())
    fn(meta)
    (d / CONFIG).write_text(json.dumps(meta))


@pytest.mark.parametrize("case, match", [
    ("no_folder", "does not exist"),
    ("no_config", "config.json is missing"),
    ("config_not_json", "corrupt checkpoint config"),
    ("config_not_safetynet", "not a safetynet checkpoint"),
    ("future_version", "format version 2; upgrade"),
    ("bad_version", "unknown format version"),
    ("no_weights", "model.safetensors is missing"),
    ("weights_garbage", "corrupt weights file"),
    ("weights_truncated", "corrupt weights file"),
    ("wrong_shapes", "size mismatch"),
    ("wrong_keys", "Missing key"),
    ("unknown_arch", "cannot build: unknown architecture"),
    ("bad_kwarg", "cannot build"),
    ("no_arch", "no model architecture"),
])
def test_checkpoint_errors(tmp_path, case, match):
    d = _small_ckpt(tmp_path)
    if case == "no_folder":
        d = tmp_path / "nope"
    elif case == "no_config":
        (d / CONFIG).unlink()
    elif case == "config_not_json":
        (d / CONFIG).write_text("{not json")
    elif case == "config_not_safetynet":
        (d / CONFIG).write_text(json.dumps({"arch": "smallcnn"}))
    elif case == "future_version":
        _edit_config(d, lambda m: m.update(format_version=2))
    elif case == "bad_version":
        _edit_config(d, lambda m: m.update(format_version="one"))
    elif case == "no_weights":
        (d / WEIGHTS).unlink()
    elif case == "weights_garbage":
        (d / WEIGHTS).write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    elif case == "weights_truncated":
        data = (d / WEIGHTS).read_bytes()
        (d / WEIGHTS).write_bytes(data[: len(data) // 2])
    elif case == "wrong_shapes":
        _edit_config(d, lambda m: m["model"].update(width=8))
    elif case == "wrong_keys":
        _edit_config(d, lambda m: m.update(model={"arch": "vgg", "width": 4, "hidden": 8}))
    elif case == "unknown_arch":
        _edit_config(d, lambda m: m.update(model={"arch": "alexnet"}))
    elif case == "bad_kwarg":
        _edit_config(d, lambda m: m["model"].update(colour="blue"))
    elif case == "no_arch":
        _edit_config(d, lambda m: m.update(model=["smallcnn"]))
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(d)
    assert "\n" not in str(info.value)


def test_build_model_unknown_arch():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("alexnet")


# ----------------------------------------------------------------------------- VGG19
# torchvision's vgg19 (configuration E), written out by hand: (index, in, out) of each conv
_TV_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
             (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512),
             (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]
_TV_LINEARS = [(0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)]


def _torchvision_vgg19_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for i, c_in, c_out in _TV_CONVS:
        shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
        shapes[f"features.{i}.bias"] = (c_out,)
    for i, f_in, f_out in _TV_LINEARS:
        f_out = num_classes if i == 6 else f_out
        shapes[f"classifier.{i}.weight"] = (f_out, f_in)
        shapes[f"classifier.{i}.bias"] = (f_out,)
    return shapes


def test_vgg19_layout_matches_torchvision():
    with torch.device("meta"):  # shapes only: no 548 MB of random numbers
        model = VGG19()
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == _torchvision_vgg19_shapes()
    assert list(state) == list(_torchvision_vgg19_shapes())  # same order too
    # torchvision documents 143,667,240 parameters for vgg19
    assert sum(p.numel() for p in model.parameters()) == 143_667_240
    assert model.late_relus == ("features.36", "classifier.1", "classifier.4")
    assert model.layer_aliases == {"pool5": "features.36", "fc6": "classifier.1", "fc7": "classifier.4"}
    mods = dict(model.named_modules())
    assert isinstance(mods["features.36"], nn.MaxPool2d) and isinstance(mods["features.35"], nn.ReLU)
    assert isinstance(mods["classifier.1"], nn.ReLU) and isinstance(mods["classifier.4"], nn.ReLU)
    assert isinstance(mods["avgpool"], nn.AdaptiveAvgPool2d) and mods["avgpool"].output_size == (7, 7)
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    with torch.device("meta"):
        assert VGG19(num_classes=2).state_dict()["classifier.6.weight"].shape == (2, 4096)


@pytest.fixture(scope="module")
def vgg19_model():
    torch.manual_seed(0)
    return VGG19().eval()


def test_vgg19_forward_224_and_taps(vgg19_model):
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits, acts = forward_with_taps(vgg19_model, x, vgg19_model.late_relus)
    assert logits.shape == (2, 1000)
    assert acts["features.36"].shape == (2, 512, 7, 7)
    assert acts["classifier.1"].shape == (2, 4096) and acts["classifier.4"].shape == (2, 4096)
    # ImageNet normalisation happens inside
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(vgg19_model.normalize(x), (x - mean) / std)


def test_vgg19_torchvision_file_round_trip(vgg19_model, tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(vgg19_model.state_dict(), path)
    loaded = VGG19.from_torchvision_file(path)
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)  # adaptive avgpool: small inputs work and keep the test fast
    with torch.no_grad():
        assert torch.equal(vgg19_model(x), loaded(x))
    assert all(t.device.type == "cpu" for t in list(loaded.parameters()) + list(loaded.buffers()))


def test_vgg19_checkpoint_round_trip(vgg19_model, tmp_path):
    save_checkpoint(vgg19_model, tmp_path / "ckpt", {"arch": "vgg19"})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(vgg19_model(x), loaded(x))


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_vgg19_file_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        VGG19.from_torchvision_file(tmp_path / "missing.pth")
    # Corrupt files make torch's restricted unpickler fail in many ways (UnpicklingError,
    # IndexError, KeyError, ...): every one must surface as the same clear error. Seeded so a
    # failure reproduces; 200 files cover the odd opcodes a single random file once hit in CI.
    rng = np.random.default_rng(0)
    bad = tmp_path / "garbage.pth"
    for size in [0, 1, 2, 8, 100, 4000] * 2 + [int(n) for n in rng.integers(1, 5000, 188)]:
        bad.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(CheckpointError, match="cannot read"):
            VGG19.from_torchvision_file(bad)
    # A pickle stream that torch's unpickler trips over with IndexError (the CI failure).
    bad.write_bytes(b"\x80\x02\x86.")
    with pytest.raises(CheckpointError, match="cannot read"):
        VGG19.from_torchvision_file(bad)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"x": _Evil(f"touch {marker}")}, evil)
    with pytest.raises(CheckpointError, match="cannot read"):
        VGG19.from_torchvision_file(evil)
    assert not marker.exists()  # weights_only=True refused it
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        VGG19.from_torchvision_file(lst)
    other = tmp_path / "resnet.pth"
    torch.save(build_model("resnet20").state_dict(), other)
    with pytest.raises(CheckpointError, match="not a torchvision vgg19"):
        VGG19.from_torchvision_file(other)
    # every key present, but with tiny wrong shapes
    wrong = {k: torch.zeros(2) for k in _torchvision_vgg19_shapes()}
    wrong["classifier.6.weight"] = torch.zeros(10, 4096)
    path = tmp_path / "wrong.pth"
    torch.save(wrong, path)
    with pytest.raises(CheckpointError, match="size mismatch"):
        VGG19.from_torchvision_file(path)
    only_head = tmp_path / "head.pth"
    torch.save({"classifier.6.weight": torch.zeros(10, 4096)}, only_head)
    with pytest.raises(CheckpointError, match="Missing key"):
        VGG19.from_torchvision_file(only_head)


# ----------------------------------------------------------------------------- pretrained registry
def _registry(tmp_path: Path, name: str = "tiny-digits") -> tuple[Path, nn.Module]:
    weights = tmp_path / "weights"
    model = _with_bn_statistics(build_model("smallcnn"), torch.rand(8, 1, 8, 8))
    save_checkpoint(model, weights / name, {"arch": "smallcnn"})
    entry = {"path": name, "sha256": sha256_file(weights / name / WEIGHTS), "test_accuracy": 0.5,
             "command": "made in a test"}
    (weights / "registry.json").write_text(json.dumps({name: entry}))
    return weights / "registry.json", model


def test_load_pretrained_verifies_and_loads(tmp_path):
    reg, model = _registry(tmp_path)
    assert available_pretrained(reg) == ("tiny-digits",)
    info = pretrained_info("tiny-digits", reg)
    assert info["test_accuracy"] == 0.5 and Path(info["directory"]) == tmp_path / "weights" / "tiny-digits"
    loaded = load_pretrained("tiny-digits", registry=reg)
    assert not loaded.training
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_load_pretrained_refuses_a_changed_file(tmp_path):
    reg, _ = _registry(tmp_path)
    weights = tmp_path / "weights" / "tiny-digits" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    load_checkpoint(weights.parent)  # the file itself still loads ...
    with pytest.raises(CheckpointError, match="sha256 .* corrupt or was replaced"):
        load_pretrained("tiny-digits", registry=reg)  # ... but the registry catches the change


@pytest.mark.parametrize("case, match", [
    ("unknown_name", "no pretrained model named 'nope'; available: tiny-digits"),
    ("no_sha", "lacks 'sha256'"),
    ("escaping_path", "must give a folder inside"),
    ("missing_weights", "is missing; reinstall"),
    ("registry_missing", "registry .* is missing"),
    ("registry_corrupt", "corrupt pretrained registry"),
    ("registry_not_a_map", "must map names"),
])
def test_pretrained_errors(tmp_path, case, match):
    reg, _ = _registry(tmp_path)
    name = "tiny-digits"
    entries = json.loads(reg.read_text())
    if case == "unknown_name":
        name = "nope"
    elif case == "no_sha":
        del entries[name]["sha256"]
    elif case == "escaping_path":
        entries[name]["path"] = "../elsewhere"
    elif case == "missing_weights":
        (tmp_path / "weights" / name / WEIGHTS).unlink()
    elif case == "registry_missing":
        reg.unlink()
    elif case == "registry_corrupt":
        reg.write_text("{oops")
    elif case == "registry_not_a_map":
        entries = [entries]
    if case not in ("registry_missing", "registry_corrupt"):
        reg.write_text(json.dumps(entries))
    with pytest.raises(CheckpointError, match=match):
        load_pretrained(name, registry=reg)


def test_packaged_registry_is_consistent():
    reg = read_registry()
    assert isinstance(reg, dict)
    for name in available_pretrained():
        info = pretrained_info(name)
        assert {"path", "sha256", "test_accuracy", "command"} <= set(info), name
        assert Path(info["directory"]).is_dir(), f"registered model {name} has no folder"


@pytest.fixture(scope="module")
def shipped_resnet20_accuracy(cifar10_dir) -> float:
    """Accuracy of the shipped ResNet-20 (loaded with its sha256 checked) on the 10,000 test images."""
    if not (SHIPPED / WEIGHTS).exists():
        msg = f"shipped checkpoint {SHIPPED / WEIGHTS} not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: a missing shipped model is a failure)")
        pytest.skip(msg)
    from safetynet.data import load_cifar10

    model = load_pretrained("cifar10-resnet20")
    data = load_cifar10(cifar10_dir, "test")
    assert len(data) == 10_000
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), 500):
            x = data.images_u8[i:i + 500].float() / 255
            correct += (model(x).argmax(1) == data.labels[i:i + 500]).sum().item()
    return correct / len(data)


@pytest.mark.slow  # evaluates the shipped model on all 10,000 CIFAR-10 test images
def test_shipped_resnet20_accuracy_matches_registry(shipped_resnet20_accuracy):
    """The registry's test_accuracy (quoted in reports and the README) is what the file really scores."""
    recorded = read_registry()["cifar10-resnet20"]["test_accuracy"]
    assert abs(shipped_resnet20_accuracy - recorded) < 0.005, (shipped_resnet20_accuracy, recorded)
    assert shipped_resnet20_accuracy > 0.85  # a sanity floor: the file is a trained CIFAR-10 model


# Issue 2 asks for >= 89 %. The shipped checkpoint (100 epochs + 12 epochs of weight averaging on one
# CPU thread; see src/safetynet/weights/README.md) scores 89.18 %.
def test_shipped_resnet20_meets_89_percent_target(shipped_resnet20_accuracy):
    assert shipped_resnet20_accuracy >= 0.89, f"shipped ResNet-20 scores {shipped_resnet20_accuracy:.4f}"


def test_pretrained_stays_callable_after_registry_import():
    """Regression: importing the ``pretrained`` registry submodule must not shadow the function."""
    import importlib

    import safetynet.models as models

    importlib.import_module("safetynet.models.pretrained")
    assert callable(models.pretrained)
    first = models.pretrained("cifar10-resnet20")
    second, source = models.resolve_model("cifar10-resnet20")
    assert source == "pretrained:cifar10-resnet20"
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
