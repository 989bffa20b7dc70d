"""Where units run must not change results: serial, local processes and a 2-node Ray cluster agree."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import comparable_results, require_module
from safetynet.errors import InputError
from safetynet.executors import ProcessExecutor, SerialExecutor, make_executor


# A library function (Ray workers import functions by reference, and this test module is not on their path).
# fn(*shared, *unit) = np.add(0.5, 10 * i)
ADD = np.add
UNITS = [(10.0 * i,) for i in range(7)]
EXPECTED = {i: 0.5 + 10.0 * i for i in range(7)}


def test_serial_and_process_executors_return_every_unit_once():
    got = dict(SerialExecutor().map(ADD, UNITS, shared=(0.5,)))
    assert got == EXPECTED
    with ProcessExecutor(2) as ex:
        seen = list(ex.map(ADD, UNITS, shared=(0.5,)))
    assert sorted(i for i, _ in seen) == list(range(7)) and dict(seen) == EXPECTED


def test_bad_executor_settings_are_refused():
    with pytest.raises(InputError, match="workers"):
        make_executor(workers=0)
    assert isinstance(make_executor(workers=1), SerialExecutor)
    assert isinstance(make_executor(workers=2), ProcessExecutor)


def test_local_ray_instance_ignores_a_stale_cluster_address(monkeypatch):
    # --ray without --ray-address starts our own instance; Ray's default would try to join whatever
    # RAY_ADDRESS (or /tmp/ray/ray_current_cluster, left behind by a killed cluster) names and then
    # refuse num_cpus ("When connecting to an existing cluster, num_cpus ... must not be provided").
    require_module("ray", 'pip install -e ".[test]" (ray is in the test and ray extras)')
    from safetynet.executors import RayExecutor

    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # nothing listens there
    with make_executor(workers=2, ray=True) as ex:
        assert isinstance(ex, RayExecutor) and ex.describe()["cluster_cpus"] == 2
        got = dict(ex.map(ADD, UNITS, shared=(0.5,)))
    assert got == EXPECTED


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray's multi-node test cluster on this machine: a head and one worker node, one CPU each."""
    require_module("ray", 'pip install -e ".[test]" (ray is in the test and ray extras)')
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def test_ray_executor_on_a_two_node_cluster(ray_cluster):
    from safetynet.executors import RayExecutor

    with RayExecutor(ray_cluster.address) as ex:
        assert ex.describe()["nodes"] == 2
        got = dict(ex.map(ADD, UNITS, shared=(0.5,)))
    assert got == EXPECTED




@pytest.mark.slow  # three small demo experiments
def test_experiment_gives_the_same_results_serial_in_processes_and_on_ray(digits_checkpoint, ray_cluster, tmp_path):
    from safetynet.experiment import ExperimentConfig, run_experiment

    def run(name: str, **kw) -> dict:
        cfg = ExperimentConfig(dataset="digits", model=str(digits_checkpoint), layer="relu2", n_train=120, n_test=60,
                               metzen_epochs=1, chunk_size=40, seed=1, out=str(tmp_path / name), **kw)
        return run_experiment(cfg)

    serial = run("serial")
    processes = run("processes", workers=2)
    on_ray = run("ray", ray_address=ray_cluster.address)
    assert serial["execution"]["executor"] == "serial" and processes["execution"]["executor"] == "processes"
    assert on_ray["execution"]["executor"] == "ray" and on_ray["execution"]["nodes"] == 2
    assert on_ray["execution"]["units_computed"] == serial["execution"]["units_computed"] > 4  # several chunks each
    assert comparable_results(processes) == comparable_results(serial)
    assert comparable_results(on_ray) == comparable_results(serial)
