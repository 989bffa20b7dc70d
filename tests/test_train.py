"""``safetynet train``: batched augmentation, resuming an interrupted run, warm starts and SWA."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import safetynet.train as train_mod
from safetynet.data import load_dataset
from safetynet.errors import CheckpointError, InputError
from safetynet.models import load_checkpoint
from safetynet.train import augment_batch, recompute_batchnorm, train
from safetynet.train_config import TrainConfig


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(dataset="digits", arch="resnet20", epochs=3, lr=0.05, batch_size=128, augment=False,
                eval_subset=200, out=str(out), channels_last=False)
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


class _Interrupt(Exception):
    pass


def _interrupt_at_epoch(monkeypatch, epoch: int) -> None:
    """Make the run die inside ``epoch`` (1-based) after its training steps, before it saves:
    what a killed job leaves behind."""
    calls = {"n": 0}
    real = train_mod.evaluate_accuracy

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise _Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate_accuracy", evaluate)


def test_augment_batch_is_a_padded_crop_and_flip_per_image():
    x = torch.rand(16, 3, 8, 8)
    gen = torch.Generator().manual_seed(3)
    out = augment_batch(x, gen, pad=2)
    # Reference, one image at a time: every output must be one of the 5 x 5 crops of the padded
    # image, flipped or not.
    padded = F.pad(x, (2, 2, 2, 2))
    flips_seen = set()
    for i in range(len(x)):
        crops = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        plain = any(torch.equal(out[i], c) for c in crops)
        flipped = any(torch.equal(out[i], c.flip(2)) for c in crops)
        assert plain or flipped, i
        flips_seen.add(flipped and not plain)
    assert flips_seen == {True, False}  # both kinds occur in 16 draws at p = 1/2
    again = augment_batch(x, torch.Generator().manual_seed(3), pad=2)
    assert torch.equal(out, again)  # deterministic by generator


@pytest.mark.slow  # several training runs of a ResNet-20
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    straight = train(_cfg(tmp_path / "straight"))
    _interrupt_at_epoch(monkeypatch, 3)
    with pytest.raises(_Interrupt):
        train(_cfg(tmp_path / "resumed"))
    monkeypatch.undo()
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in log] == [1, 2]  # two epochs were saved before the kill
    resumed = train(_cfg(tmp_path / "resumed"))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["test_acc"] == straight["test_acc"]
    assert resumed["test_images"] == 450  # the last epoch scores the whole test split


def test_resume_refuses_other_settings(tmp_path):
    train(_cfg(tmp_path / "run", epochs=1))
    with pytest.raises(CheckpointError, match="lr=0.05"):
        train(_cfg(tmp_path / "run", epochs=1, lr=0.1))
    with pytest.raises(CheckpointError, match="swa_epochs"):
        train(_cfg(tmp_path / "run", epochs=1, swa_epochs=1))


@pytest.mark.slow  # several training runs of a ResNet-20
def test_warm_start_checks_the_architecture(tmp_path):
    train(_cfg(tmp_path / "small", arch="smallcnn", epochs=1))
    with pytest.raises(InputError, match="same architecture"):
        train(_cfg(tmp_path / "warm", init_from=str(tmp_path / "small")))
    # same architecture: the new run starts from those weights (its first-epoch loss is far lower)
    train(_cfg(tmp_path / "base", epochs=3))
    cold = train(_cfg(tmp_path / "cold", epochs=1, lr=0.01))
    warm = train(_cfg(tmp_path / "warm2", epochs=1, lr=0.01, init_from=str(tmp_path / "base")))
    assert warm["train_loss"] < 0.7 * cold["train_loss"]


@pytest.mark.parametrize("kw, match", [
    (dict(swa_epochs=4), "swa_epochs"),
    (dict(swa_epochs=-1), "swa_epochs"),
    (dict(swa_epochs=1, swa_lr=0.0), "swa_lr"),
    (dict(swa_epochs=1, swa_lr=float("nan")), "swa_lr"),
    (dict(swa_epochs=1, swa_per_epoch=0), "swa_per_epoch"),
])
def test_swa_settings_are_validated(tmp_path, kw, match):
    with pytest.raises(InputError, match=match):
        train(_cfg(tmp_path, **kw))


@pytest.mark.parametrize("per_epoch", [1, 3])
@pytest.mark.slow  # several training runs of a ResNet-20
def test_swa_saves_the_mean_of_the_swa_epochs_with_recomputed_batchnorm(tmp_path, monkeypatch, per_epoch):
    snapshots: list[dict[str, torch.Tensor]] = []
    lrs: list[float] = []
    real_update = train_mod._WeightAverage.update

    def update(self, model):
        snapshots.append({k: p.detach().clone() for k, p in model.named_parameters()})
        real_update(self, model)

    real_step = torch.optim.SGD.step

    def step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    bn_calls: list[dict] = []
    real_bn = train_mod.recompute_batchnorm

    def recompute(model, data, *a, **kw):
        params = {k: p.detach().clone() for k, p in model.named_parameters()}
        real_bn(model, data, *a, **kw)
        bn_calls.append({"params": params, "n_images": len(data),
                         "buffers": {k: b.clone() for k, b in model.named_buffers()}})

    monkeypatch.setattr(train_mod._WeightAverage, "update", update)
    monkeypatch.setattr(train_mod, "recompute_batchnorm", recompute)
    monkeypatch.setattr(torch.optim.SGD, "step", step)
    metrics = train(_cfg(tmp_path / "swa", epochs=4, swa_epochs=2, swa_lr=0.02, swa_per_epoch=per_epoch))
    n = 2 * per_epoch
    assert len(snapshots) == n and metrics["swa_snapshots"] == n
    steps = len(lrs) // 4
    assert all(lr == 0.02 for lr in lrs[2 * steps:])  # constant rate in the SWA epochs
    assert max(lrs[:2 * steps]) == pytest.approx(0.05, rel=0.01)  # one-cycle peak before them
    model, meta = load_checkpoint(tmp_path / "swa")
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, sum(snap[name] for snap in snapshots) / n, rtol=0, atol=1e-6)
    assert meta["metrics"]["test_images"] == 450 and 0 <= meta["metrics"]["last_iterate_test_acc"] <= 1
    # BatchNorm statistics were recomputed once, for the averaged weights, over the training split,
    # and those are what was saved (recompute_batchnorm itself is checked against torch below).
    (call,) = bn_calls
    for name, p in call["params"].items():
        torch.testing.assert_close(p, sum(snap[name] for snap in snapshots) / n, rtol=0, atol=1e-6)
    assert call["n_images"] == 1347
    for name, value in model.named_buffers():
        if "running" in name:
            assert torch.equal(value, call["buffers"][name]), name


@pytest.mark.slow  # several training runs of a ResNet-20
def test_swa_resumes_mid_average(tmp_path, monkeypatch):
    cfg = dict(epochs=4, swa_epochs=3, swa_lr=0.02, swa_per_epoch=2)
    train(_cfg(tmp_path / "straight", **cfg))
    _interrupt_at_epoch(monkeypatch, 3)  # two SWA snapshots are saved, the third epoch dies
    with pytest.raises(_Interrupt):
        train(_cfg(tmp_path / "resumed", **cfg))
    monkeypatch.undo()
    train(_cfg(tmp_path / "resumed", **cfg))
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-7, msg=k)


def test_recompute_batchnorm_matches_torch_update_bn():
    """Against the independent reference ``torch.optim.swa_utils.update_bn`` fed the same batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 8),
                          nn.BatchNorm1d(8))
    data = load_dataset("digits", "train")
    ours, ref = model, copy.deepcopy(model)
    recompute_batchnorm(ours, data, torch.Generator().manual_seed(5), batch_size=100, augment=True)
    gen = torch.Generator().manual_seed(5)
    perm = torch.randperm(len(data), generator=gen)
    batches = []
    for s in range(0, len(data), 100):
        x = data.images_u8[perm[s:s + 100]].float().div_(255)
        batches.append(augment_batch(x, gen))
    torch.optim.swa_utils.update_bn(batches, ref)
    for (name, a), (_, b) in zip(ours.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(a, b, msg=name)
    assert ours[1].momentum == 0.1  # restored
