"""Every Python example in the README runs as written and does what it says (re-checked on the model)."""

from __future__ import annotations

import re
import runpy
import shlex

import pytest

from conftest import REPO


def _python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_examples():
    assert _python_blocks(), "README.md should show the Python API"


@pytest.fixture
def attack_calls(monkeypatch) -> list[dict]:
    """Every attack call made while the test runs: the attack, its inputs and its (raw, clipped, success)."""
    from safetynet.attacks.base import Attack

    calls: list[dict] = []
    call = Attack.__call__

    def spy(self, model, x, criterion, **kwargs):
        result = call(self, model, x, criterion, **kwargs)
        calls.append({"attack": self, "model": model, "x": x, "criterion": criterion, "result": result, **kwargs})
        return result

    monkeypatch.setattr(Attack, "__call__", spy)
    return calls


def _logits(model, x):
    import torch

    with torch.no_grad():  # the attacks' own layout, so borderline argmaxes compare like for like
        return model(x.contiguous(memory_format=torch.channels_last))


def _check_api_example(ns: dict, calls: list[dict], printed: str) -> None:
    """Block "Python API": BIM within its budget, DeepFool-5, SafetyNet's predict with REJECT = -1."""
    import torch

    model, x, y, adv, success = ns["model"], ns["x"], ns["y"], ns["adv"], ns["success"]
    assert x.shape == (200, 3, 32, 32) and y.shape == (200,) and adv.shape == x.shape
    assert adv.min() >= 0 and adv.max() <= 1 and (adv - x).abs().max() <= 4 / 255 + 1e-6
    assert success.dtype == torch.bool and torch.equal(success, _logits(model, adv).argmax(1) != y)
    assert success[:100].sum() >= 10, "too few adversarials to fit the detector on"
    clean_top5 = _logits(model, x).topk(5, dim=1).indices
    pred5 = _logits(model, ns["adv5"]).argmax(1)
    outside = (pred5[:, None] != clean_top5).all(1) & (pred5 != y)
    assert torch.equal(ns["ok5"], outside) and ns["ok5"].float().mean() > 0.5
    labels, rest = ns["labels"], adv[100:]
    detected = torch.as_tensor(ns["net"].detect(rest))
    assert labels.shape == (100,) and ns["REJECT"] == -1
    assert (labels[detected] == -1).all()
    assert torch.equal(labels[~detected], _logits(model, rest).argmax(1)[~detected])
    assert len(calls) == 2


def _check_type2_example(ns: dict, calls: list[dict], printed: str) -> None:
    """Block "Attacking classifier and detector": every success mask equals re-checking the clipped images
    on the classifier and the real (hard-quantized) SafetyNet; the printed rates are those masks."""
    import torch

    model, net, x, y = ns["model"], ns["net"], ns["x"], ns["y"]
    goal_calls = [c for c in calls if c["criterion"] is ns["goal"]]
    assert len(goal_calls) == 3  # type I, smoothed type II, BPDA
    for c, name in zip(goal_calls, ("type1", "smoothed", "bpda")):
        clipped, success = c["result"].clipped, c["result"].success
        assert torch.equal(success, ns[name]) and success.shape == (20,)
        assert clipped.min() >= 0 and clipped.max() <= 1 and (clipped - x).abs().max() <= 4 / 255 + 1e-6
        fooled = _logits(model, clipped).argmax(1) != y
        assert torch.equal(success, fooled & ~torch.as_tensor(net.detect(clipped))), name
    rates = [float(v) / 100 for v in re.findall(r"(\d+)%", printed)]
    expected = [ns[n].float().mean().item() for n in ("type1", "smoothed", "bpda")]
    assert len(rates) == 3 and all(abs(r - e) <= 0.005 + 1e-9 for r, e in zip(rates, expected)), (printed, expected)


def _check_defence_example(ns: dict, calls: list[dict], printed: str) -> None:
    """Block "A defended classifier with an operating point": the threshold is the (k+1)-th largest natural
    score (k = floor(0.05 n), computed here with numpy), and success = misclassified and score <= threshold."""
    import numpy as np
    import torch

    model, net, det, x, y = ns["model"], ns["net"], ns["det"], ns["x"], ns["y"]
    natural = np.sort(net.decision_function(ns["x_fit"][200:]))[::-1]
    assert det.threshold == natural[int(np.floor(0.05 * len(natural)))]
    assert np.mean(net.decision_function(ns["x_fit"][200:]) > det.threshold) <= 0.05
    c = [c for c in calls if c["x"] is x][-1]
    adv = c["result"].clipped
    want = (_logits(model, adv).argmax(1) != y) & torch.as_tensor(net.decision_function(adv) <= det.threshold)
    assert torch.equal(ns["success"], want)
    clean_rejected = np.mean(net.decision_function(x) > det.threshold)
    assert f"clean rejected {clean_rejected:.0%}" in printed and f"{ns['success'].float().mean():.0%}" in printed


def _check_benchmark_example(ns: dict, calls: list[dict], printed: str) -> None:
    """Block "Detector benchmark": the user's detector is a column of (a) and (b), calibrated by the job at 5 % FPR."""
    results, mine = ns["results"], ns["mine"]
    rows = [r for r in results["detection"] if r["detector"] == "energy"]
    assert {r["trained_on"] for r in rows} == {"given"} and rows
    assert results["thresholds"]["energy@given"] == mine.threshold is not None
    assert {c["defence"] for c in results["strongest"]} >= {"ori", "confidence", "energy"}
    assert all(f"('{r['tested_on']}', {round(r['auc'], 3)})" in printed for r in rows)


CHECKS = {"TopKMisclassification(y, k=5)": _check_api_example, "SmoothedTypeII(net": _check_type2_example,
          "Defence(\"det_a\"": _check_defence_example, "run_benchmark(": _check_benchmark_example}


@pytest.mark.parametrize("index", range(len(_python_blocks())))
@pytest.mark.slow  # the README examples: attacks and SafetyNet fits on the shipped ResNet-20
def test_readme_python_example_runs_and_does_what_it_says(index, tmp_path, monkeypatch, attack_calls, capsys):
    """Each block runs as the README shows it (no substitutions), then its results are re-checked."""
    from safetynet.models.pretrained import available_pretrained

    if "cifar10-resnet20" not in available_pretrained():
        pytest.fail("the shipped cifar10-resnet20 checkpoint is missing from src/safetynet/weights")
    block = _python_blocks()[index]
    checks = [check for marker, check in CHECKS.items() if marker in block]
    assert len(checks) == 1, f"README block {index} has no behavioural check in tests/test_readme.py:\n{block}"
    script = tmp_path / f"readme_{index}.py"
    script.write_text(block)
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(script), run_name="__main__")
    checks[0](ns, attack_calls, capsys.readouterr().out)


def _cli_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("safetynet "):
                lines.append(line)
    return lines


def test_readme_has_cli_examples():
    assert len(_cli_lines()) >= 5


@pytest.mark.parametrize("line", _cli_lines())
def test_readme_cli_example_parses(line):
    """Every ``safetynet ...`` line in the README's shell blocks names real sub-commands and flags."""
    from safetynet.cli import build_parser

    try:
        build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit as e:
        pytest.fail(f"README command does not parse (exit {e.code}): {line}")
