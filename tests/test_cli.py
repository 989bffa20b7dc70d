"""The ``safetynet`` command: flags generated from the configs, common flags, --json, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import REPO
from safetynet import cli
from safetynet.cli_config import config_fields, config_from_args, field_default, flag_name
from safetynet.exit_codes import (
    EXIT_BAD_INPUT,
    EXIT_FAKE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REAL,
    EXIT_REJECTED,
    EXIT_USAGE,
)

COMMANDS = {" ".join(c.path): c for c in cli.COMMANDS}
COMMON = {"--threads", "--seed", "--json", "-h"}


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Config flags by dest (common flags and -h left out); positionals under their dest too."""
    return {a.dest: a for a in parser._actions if not (set(a.option_strings) & COMMON)}


@pytest.mark.parametrize("name", COMMANDS)
def test_flags_are_the_config_fields(name):
    cmd = COMMANDS[name]
    cls = cmd.config_class()
    flags = _flags(cli.command_parser(*cmd.path))
    fields = config_fields(cls, skip=cli.COMMON_DEFAULTS)
    assert set(flags) == {f.name for f in fields}
    for f in fields:
        action = flags[f.name]
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
        if f.metadata.get("positional"):
            assert action.option_strings == []
            continue
        assert action.option_strings[0] == flag_name(f)
        default = field_default(f)
        assert action.required == (default is dataclasses.MISSING)
        if default is not dataclasses.MISSING:
            assert action.default == default, f.name
    if "seed" in {f.name for f in dataclasses.fields(cls)}:  # the config's seed is the common --seed
        assert field_default(next(f for f in dataclasses.fields(cls) if f.name == "seed")) == cli.COMMON_DEFAULTS["seed"]


def _value(f: dataclasses.Field, action: argparse.Action):
    """A non-default value of the field's type, as a config value."""
    default = field_default(f)
    if action.choices:
        return list(action.choices)[-1]
    if isinstance(action, argparse.BooleanOptionalAction):
        return not default
    if action.nargs == "+":
        return [0.5, 0.25] if action.type is float else [30, 40] if action.type is int else ["a", "b"]
    if action.metavar == "JSON":
        return {"k": 1}
    if action.type is int:
        return 3 if default in (None, dataclasses.MISSING) else default + 1
    if action.type is float:
        return 0.25 if default in (None, dataclasses.MISSING) else default + 0.5
    return "x-" + f.name


def _argv(cmd, values: dict) -> list[str]:
    parser = cli.command_parser(*cmd.path)
    flags = _flags(parser)
    argv = [*cmd.path]
    argv += [str(values[d]) for d, a in flags.items() if not a.option_strings]
    for dest, action in flags.items():
        if not action.option_strings:
            continue
        v = values[dest]
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(action.option_strings[0] if v else action.option_strings[1])
        elif isinstance(v, list):
            argv += [action.option_strings[0], *map(str, v)]
        else:
            argv += [action.option_strings[0], json.dumps(v) if isinstance(v, dict) else str(v)]
    return argv


@pytest.mark.parametrize("name", COMMANDS)
def test_parse_config_round_trip(name):
    cmd = COMMANDS[name]
    cls = cmd.config_class()
    flags = _flags(cli.command_parser(*cmd.path))
    values = {f.name: _value(f, flags[f.name]) for f in config_fields(cls, skip=cli.COMMON_DEFAULTS)}
    args = cli.build_parser().parse_args([*_argv(cmd, values), "--seed", "7", "--threads", "2"])
    cfg = config_from_args(cls, args)
    expected = cls(**values, **({"seed": 7} if "seed" in {f.name for f in dataclasses.fields(cls)} else {}))
    assert cfg == expected
    assert args.threads == 2 and args.seed == 7 and args.spec is cmd
    # the defaults round-trip too (required fields given)
    required = {f.name: values[f.name] for f in config_fields(cls) if field_default(f) is dataclasses.MISSING}
    args = cli.build_parser().parse_args(_required_argv(cmd, required))
    assert config_from_args(cls, args) == cls(**required)


def _required_argv(cmd, required: dict) -> list[str]:
    flags = _flags(cli.command_parser(*cmd.path))
    argv = [*cmd.path]
    for dest, v in required.items():
        action = flags[dest]
        argv += [str(v)] if not action.option_strings else [action.option_strings[0], str(v)]
    return argv


def test_common_flags_mean_the_same_everywhere():
    parser = cli.build_parser()
    seen: dict[str, dict[str, object]] = {}
    for name, cmd in COMMANDS.items():
        for action in cli.command_parser(*cmd.path, parser=parser)._actions:
            for opt in action.option_strings:
                seen.setdefault(opt, {})[name] = action.default
    for opt, default in (("--threads", 1), ("--seed", 0), ("--json", False)):
        assert seen[opt] == {name: default for name in COMMANDS}, opt
    # the embedded sample everywhere; training needs a training split, which the sample lacks, and the
    # benchmark's leaderboard is on the full CIFAR-10 copy (its --quick setting runs on the sample)
    special = {"train", "benchmark"}
    assert {k: v for k, v in seen["--dataset"].items() if k not in special} == {
        k: "cifar10-sample" for k in seen["--dataset"] if k not in special}
    assert seen["--dataset"]["benchmark"] == "cifar10"
    assert set(seen["--data-dir"].values()) == {None}
    # --pool: all units in demo; robustness spells its 4x4 default --detector-pool, so no name has two defaults
    assert seen["--pool"] == {"demo": None} and seen["--detector-pool"] == {"robustness": 4}
    assert "--set" not in seen and "--to" not in seen


def test_no_job_sets_global_state():
    """torch.set_num_threads and numpy's global seed are set in one place: cli.set_global_state."""
    # executors.py pins torch threads inside the worker processes it spawns (they are its own, not the caller's)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "src" / "safetynet").rglob("*.py")
                 if p.name not in ("cli.py", "executors.py")
                 and ("set_num_threads(" in p.read_text() or "np.random.seed(" in p.read_text())]
    assert offenders == []
    executors = (REPO / "src" / "safetynet" / "executors.py").read_text()
    assert executors.count("set_num_threads(") == 1 and "def _init_worker" in executors


def test_global_state_is_set_once_before_the_job(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli, "set_global_state", lambda threads, seed: calls.append((threads, seed)))
    assert cli.main(["data", "info", "--dataset", "digits", "--threads", "2", "--seed", "5"]) == EXIT_OK
    assert calls == [(2, 5)]


def test_threads_flag_sets_torch_threads(capsys):
    before = torch.get_num_threads()
    try:
        assert cli.main(["data", "info", "--dataset", "digits", "--threads", "2"]) == EXIT_OK
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- --json and text output
def _json(capsys, *argv) -> dict:
    assert cli.main([*argv, "--json"]) == EXIT_OK
    return json.loads(capsys.readouterr().out)


def test_json_output_data_info_and_text_otherwise(capsys):
    doc = _json(capsys, "data", "info")
    assert doc["dataset"] == "cifar10-sample" and doc["images"] == 1000 and doc["image_shape"] == [3, 32, 32]
    assert cli.main(["data", "info"]) == EXIT_OK
    text = capsys.readouterr().out
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    assert "images: 1000" in text and "  airplane: 100" in text


def test_json_output_evaluate(capsys):
    doc = _json(capsys, "evaluate", "--n", "20")
    assert doc["images"] == 20 and 0 <= doc["accuracy"] <= 1 and doc["model"].endswith("cifar10-resnet20")


def test_json_output_attack(tmp_path, capsys):
    doc = _json(capsys, "attack", "--attack", "fgsm", "--eps", "0.03", "--n", "8", "--out", str(tmp_path / "a.npz"))
    assert doc["n"] == 8 and doc["dataset"] == "cifar10-sample" and len(doc["results"]) == 1
    assert (tmp_path / "a.npz").is_file()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from test_verify_cli import _write_pair

    return _write_pair(tmp_path_factory.mktemp("pair"))


def test_json_output_verify(pair, capsys):
    code = cli.main(["sceneproof", "verify", *map(str, pair), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == doc["exit_code"] in (EXIT_REAL, EXIT_FAKE, EXIT_REJECTED)


# ----------------------------------------------------------------------------- exit codes
def test_exit_codes_are_distinct():
    codes = (EXIT_OK, EXIT_FAKE, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_INTERRUPTED)
    assert len(set(codes)) == len(codes) and EXIT_REAL == EXIT_OK
    assert (EXIT_REAL, EXIT_FAKE, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_INTERRUPTED) == (0, 1, 2, 3, 4, 130)


@pytest.mark.parametrize("argv", [
    ["sceneproof", "verfy", "a.png", "b.png"],  # a typo of the command
    ["sceneproof", "verify", "a.png", "b.png", "--bogus", "1"],  # an unknown flag
    ["sceneproof", "verify", "a.png", "b.png", "--depth-scal", "1000"],  # no abbreviations: a typo is no other flag
    ["evaluate", "--n", "twenty"],  # a value of the wrong type
    ["robustness", "--levels", "3"],  # outside the flag's choices
    ["demo", "--threads", "0"],
])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == EXIT_USAGE
    assert "usage: safetynet" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--n", "0"], "n must be >= 1"),
    (["data", "info", "--dataset", "mnist"], "unknown data set"),
    (["sceneproof", "verify", "missing.png", "missing-depth.png"], "does not exist"),
])
def test_bad_input_exits_3_with_one_line(argv, needle, capsys):
    assert cli.main(argv) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("safetynet: error:") and needle in lines[0]


def test_rejection_exits_4(monkeypatch, capsys):
    from safetynet.sceneproof import verify as verify_module

    def rejected(*args, **kwargs):
        return verify_module.Verdict(verify_module.REJECTED_VERDICT, None, 0.5, 1.0, 0.5, 1)

    monkeypatch.setattr(verify_module, "verify", rejected)
    assert cli.main(["sceneproof", "verify", "a.png", "b.png"]) == EXIT_REJECTED
    assert capsys.readouterr().out.startswith("rejected (adversarial)")
    assert cli.main(["sceneproof", "verify", "a.png", "b.png", "--json"]) == EXIT_REJECTED
    assert json.loads(capsys.readouterr().out)["exit_code"] == EXIT_REJECTED


def test_interrupt_exits_130(monkeypatch, capsys):
    from safetynet import data

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "dataset_info", interrupted)
    assert cli.main(["data", "info"]) == EXIT_INTERRUPTED


def test_exit_codes_documented():
    readme = (REPO / "README.md").read_text()
    epilog = cli.build_parser().epilog
    for code in (EXIT_OK, EXIT_FAKE, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_INTERRUPTED):
        assert f"| {code} |" in readme and f"  {code} " in epilog
    assert Path(cli.__file__).read_text().count("\n") < 400
