"""``safetynet attack``: exit codes (3 for bad input), one-line errors and the contents of the output file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from safetynet.cli import main
from safetynet.exit_codes import EXIT_BAD_INPUT


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from safetynet.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt")
    metrics = train(TrainConfig(dataset="digits", arch="smallcnn", epochs=15, augment=False, lr=0.05,
                                batch_size=64, eval_subset=450, out=str(out)))
    assert metrics["test_acc"] > 0.9
    return out


def _run(capsys, *argv):
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_attack_writes_npz_and_prints_summary(checkpoint, tmp_path, capsys):
    out = tmp_path / "pgd.npz"
    code, stdout, err = _run(capsys, "attack", "--model", str(checkpoint), "--attack", "pgd", "--eps", "0.05", "0.2",
                             "--steps", "5", "--dataset", "digits", "--n", "40", "--batch-size", "16", "--seed", "1",
                             "--out", str(out))
    assert code == 0, err
    summary = json.loads(stdout)
    assert [r["eps"] for r in summary["results"]] == [0.05, 0.2]
    assert [p.name for p in tmp_path.iterdir()] == ["pgd.npz"]  # no temp file left behind

    with np.load(out, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    assert data["adversarial"].shape == (2, 40, 1, 8, 8) and data["adversarial"].dtype == np.float32
    assert data["success"].shape == (2, 40) and data["success"].dtype == bool
    np.testing.assert_array_equal(data["index"], np.arange(40))
    np.testing.assert_array_equal(data["eps"], [0.05, 0.2])
    cfg = json.loads(str(data["config"]))
    assert cfg["config"]["attack"] == "pgd" and cfg["config"]["seed"] == 1

    # Independent recomputation from the checkpoint and the raw data set.
    from safetynet.data import load_digits
    from safetynet.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    test = load_digits("test")
    x, y = test.images[:40], test.labels[:40]
    np.testing.assert_array_equal(data["labels"], y.numpy())
    adv = torch.from_numpy(data["adversarial"])
    with torch.no_grad():
        np.testing.assert_array_equal(data["clean_predictions"], model(x).argmax(1).numpy())
        for i, eps in enumerate((0.05, 0.2)):
            pred = model(adv[i]).argmax(1)
            np.testing.assert_array_equal(data["predictions"][i], pred.numpy())
            np.testing.assert_array_equal(data["success"][i], (pred != y).numpy())
            delta = (adv[i] - x).flatten(1)
            np.testing.assert_allclose(data["l2"][i], delta.norm(dim=1).numpy(), rtol=1e-5, atol=1e-6)
            assert (data["linf"][i] <= eps + 1e-6).all()
            assert summary["results"][i]["success_rate"] == pytest.approx(data["success"][i].mean())
    assert summary["results"][1]["success_rate"] >= summary["results"][0]["success_rate"]


def test_deepfool_top_k_and_targeted(checkpoint, tmp_path, capsys):
    out = tmp_path / "df5.npz"
    code, stdout, err = _run(capsys, "attack", "--model", str(checkpoint), "--attack", "deepfool", "--k", "5",
                             "--candidates", "4", "--dataset", "digits", "--n", "30", "--out", str(out))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["results"][0]["eps"] is None and summary["results"][0]["success_rate"] > 0.8
    with np.load(out, allow_pickle=False) as z:
        assert np.isinf(z["eps"]).all()
        success, pred = z["success"][0], z["predictions"][0]
    from safetynet.data import load_digits
    from safetynet.models import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        top5 = model(load_digits("test").images[:30]).topk(5, dim=1).indices.numpy()
    np.testing.assert_array_equal(success, ~(pred[:, None] == top5).any(1))

    out = tmp_path / "tgt.npz"
    code, stdout, err = _run(capsys, "attack", "--model", str(checkpoint), "--attack", "bim", "--eps", "0.3",
                             "--targeted", "--dataset", "digits", "--n", "30", "--out", str(out))
    assert code == 0, err
    with np.load(out, allow_pickle=False) as z:
        assert (z["targets"] != z["labels"]).all()
        np.testing.assert_array_equal(z["success"][0], z["predictions"][0] == z["targets"])


@pytest.mark.parametrize("args,match", [
    (["--attack", "pgd"], "needs --eps"),
    (["--attack", "cw", "--eps", "0.1"], "unknown attack"),
    (["--attack", "pgd", "--eps", "-0.1"], ">= 0"),
    (["--attack", "pgd", "--eps", "0.1", "--overshoot", "0.1"], "overshoot"),
    (["--attack", "deepfool", "--k", "3", "--targeted"], "exclusive"),
    (["--attack", "deepfool", "--n", "100000"], "exceeds"),
    (["--attack", "deepfool", "--dataset", "mnist"], "unknown data set"),
    (["--attack", "deepfool", "--candidates", "0"], "candidates"),
    (["--attack", "pgd", "--eps", "0.1", "--candidates", "3"], "candidates"),
])
def test_bad_input_gives_one_line_error(checkpoint, tmp_path, capsys, args, match):
    out = tmp_path / "x.npz"
    base = ["attack", "--model", str(checkpoint), "--dataset", "digits", "--n", "4", "--out", str(out)]
    code, stdout, err = _run(capsys, *base, *args)
    assert code == EXIT_BAD_INPUT and stdout == ""
    assert err.startswith("safetynet: error:") and err.count("\n") == 1 and match in err
    assert not out.exists()


def test_missing_checkpoint_and_wrong_data_set(checkpoint, tmp_path, capsys):
    code, _, err = _run(capsys, "attack", "--model", str(tmp_path / "nope"), "--attack", "fgsm", "--eps", "0.1",
                        "--dataset", "digits", "--out", str(tmp_path / "x.npz"))
    assert code == EXIT_BAD_INPUT and err.count("\n") == 1
    code, _, err = _run(capsys, "attack", "--model", str(checkpoint), "--attack", "fgsm", "--eps", "0.1",
                        "--dataset", "cifar10-sample", "--n", "4", "--out", str(tmp_path / "x.npz"))
    assert code == EXIT_BAD_INPUT and err.count("\n") == 1 and "data set it was trained for" in err
