"""Shared fixtures. Real data is found through one setting, ``SAFETYNET_DATA``.

``SAFETYNET_DATA`` defaults to ``../shared/data`` (relative to the repository root). Where the
folder is absent, tests that need it skip with the reason; under CI (``CI=true``) a missing
data folder is a failure instead, so CI can never pass by silently skipping. Test dependencies
(the peers torchattacks / Foolbox / ART, import-linter) follow the same rule: ``require_module``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

# One BLAS/OpenMP thread per test process (set before numpy and torch load their thread pools; it is
# inherited by the jobs tests start as subprocesses): the README runs the suite with one pytest-xdist
# worker per core, and two multi-threaded workers on two cores run many times slower, not faster.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("SAFETYNET_DATA", REPO.parent / "shared" / "data")).resolve()


def missing(msg: str) -> NoReturn:
    """Skip with ``msg``; under CI (``CI=true``) fail instead, so CI cannot pass by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (CI=true: a missing data folder or test dependency is a failure)")
    pytest.skip(msg)


def require_data(*parts: str) -> Path:
    """Return ``SAFETYNET_DATA/<parts>``; skip (or fail under CI=true) when it is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        missing(f"shared data {path} not found; set SAFETYNET_DATA to the folder holding cifar10-jpg/ and rgbd/")
    return path


def require_module(name: str, install: str = 'pip install -e ".[test]"') -> ModuleType:
    """Import and return the test dependency ``name``; skip (or fail under CI=true) when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"test dependency {name} is not installed ({e}); install it with {install}")


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    return require_data("cifar10-jpg")


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A SmallCNN trained on the digits (~98 % test accuracy, a few seconds), shared by all tests."""
    from safetynet.train import train
    from safetynet.train_config import TrainConfig

    out = tmp_path_factory.mktemp("digits-smallcnn")
    torch.set_num_threads(1)
    metrics = train(TrainConfig(dataset="digits", arch="smallcnn", epochs=15, augment=False, lr=0.05,
                                batch_size=64, eval_subset=450, out=str(out)))
    assert metrics["test_acc"] > 0.9, metrics
    return out


@pytest.fixture(scope="session")
def digits_protected(digits_checkpoint) -> dict:
    """The digits SmallCNN protected by SafetyNet: one detector (relu2) and a two-layer ensemble,
    fitted on 400 training images and their BIM-L∞ (eps 0.1) adversarials; shared by the
    attack-on-detector tests."""
    from safetynet.attacks import BIM
    from safetynet.data import load_dataset
    from safetynet.models import load_checkpoint
    from safetynet.safetynet import SafetyNet

    torch.set_num_threads(1)
    model, _ = load_checkpoint(digits_checkpoint)
    model.eval()
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    x, y = tr.images[:400], tr.labels[:400]
    xt, yt = te.images[:60], te.labels[:60]
    _, xa, ok = BIM(steps=10, step_size=0.025)(model, x, y, eps=0.1)
    net = SafetyNet(model, layers=["relu2"], pool=4, detector_params={"random_state": 0}).fit(x, xa[ok])
    ens = SafetyNet(model, layers=["relu2", "fc1"], pool=4, detector_params={"random_state": 0}).fit(x, xa[ok])
    return {"model": model, "x": x, "y": y, "xa": xa[ok], "xt": xt, "yt": yt, "net": net, "ens": ens}


# --- attack test models (test_attacks.py: contracts; test_peers.py: the same models against the peers) ---

class TinyCNN(nn.Module):
    """Digits classifier of our own (independent of safetynet.models), ReLU so DeepFool's linearisation is exact per cell."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                                      nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.3) / 0.37))


@pytest.fixture(scope="session")
def tiny_digits():
    """(model, 64 test images, labels): a TinyCNN trained for ~1 s on the digits (test accuracy > 0.9)."""
    import torch.nn.functional as F

    from safetynet.data import load_digits

    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    train, test = load_digits("train"), load_digits("test")
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = train.images, train.labels
    for _ in range(150):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = test.images[:64], test.labels[:64]
    with torch.no_grad():
        acc = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert acc > 0.9, f"test model too weak to test attacks on ({acc:.2f})"
    return model, xt, yt


@pytest.fixture(scope="session")
def random_resnet():
    """(model, 8 noise images, the model's own labels): a randomly initialised ResNet-20, for arithmetic checks."""
    from safetynet.models import build_model

    torch.manual_seed(1)
    model = build_model("resnet20").eval()
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    # Our gradient attacks run convolutions in channels-last layout (twice as fast on CPU). A
    # random-init ResNet on noise has near-zero input gradients whose sign can differ between
    # convolution kernels at 1e-7 and then cascade over BIM steps, so the reference gets the same
    # layout: both run identical kernels and any remaining difference is the algorithm's.
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        y = model(x).argmax(1)  # labels the model "gets right", so the loss has a clean gradient
    return model, x, y


def comparable_results(results: dict) -> dict:
    """An experiment's results without what may differ between equal runs: timings, where units ran, the output folder."""
    import json

    r = json.loads(json.dumps(results, default=float))
    r.pop("seconds"), r.pop("execution")
    r["config"] = {k: v for k, v in r["config"].items() if k not in ("out", "cache", "workers", "ray", "ray_address")}
    for a in r["attacks"]:
        a.pop("seconds")
    for row in r.get("size_curve", []):
        row.pop("fit_seconds", None)
    return r
