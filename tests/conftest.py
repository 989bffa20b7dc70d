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

import pytest
import torch

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
