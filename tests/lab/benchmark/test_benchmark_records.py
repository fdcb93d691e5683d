"""benchmark's saved JSON files are the dumps of their typed records, and the records agree with the result."""

import pytest

from neurotrace.lab.benchmark import BenchmarkRequest, run_benchmark
from neurotrace.lab.benchmark.attribution import METHODS
from neurotrace.lab.benchmark.circuits import REGIMES
from neurotrace.lab.benchmark.planted_model import COUNTRIES, HEAD, HEAD_LAYER, MLP_LAYER
from neurotrace.lab.benchmark.run import DISSOCIATION_FILE, PLANTED_FILE, SCORES_FILE
from neurotrace.lab.benchmark.schema import CircuitScores, Dissociation, PlantedRecord
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.testing.records import read_back

REQUEST = BenchmarkRequest(seeds=2, samples=64, ig_steps=16, seed=5)


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory):
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("benchmark") / "runs"))
    return lab, run_benchmark(REQUEST, lab=lab)


def test_the_per_seed_aurocs_round_trip_through_their_record_and_average_to_the_results_table(benchmarked):
    lab, result = benchmarked
    rec = read_back(lab, result.run_id, SCORES_FILE, CircuitScores.model_validate)
    assert (rec.seeds, rec.samples, rec.ig_steps, rec.ig_baseline, rec.seed) == (2, 64, 16, "zeros", 5)
    assert list(rec.auroc) == list(METHODS)
    assert all(list(per) == [*REGIMES, "null"] for per in rec.auroc.values())
    for row in result.table:
        values = rec.auroc[row.method][row.circuit]
        assert len(values) == row.n == (2 * len(REGIMES) if row.circuit == "null" else 2)
        assert round(sum(values) / len(values), 4) == pytest.approx(row.auroc_mean, abs=1e-4)


def test_the_dissociation_round_trips_through_its_record_and_is_the_results(benchmarked):
    lab, result = benchmarked
    rec = read_back(lab, result.run_id, DISSOCIATION_FILE, Dissociation.model_validate)
    assert rec.checks == result.dissociation and rec.holds is result.dissociation_holds
    assert rec.holds == all(rec.checks.values()) and rec.jacobian_max_abs_diff == result.jacobian_max_abs_diff


def test_the_planted_record_round_trips_and_names_the_planted_route_and_the_results_checks(benchmarked):
    lab, result = benchmarked
    rec = read_back(lab, result.run_id, PLANTED_FILE, PlantedRecord.model_validate)
    assert rec.checks == result.planted and rec.model_dir == result.planted_model
    assert (rec.mlp_layer, rec.head_layer, rec.head) == (MLP_LAYER, HEAD_LAYER, HEAD)
    assert [f.clean_subject for f in rec.facts] == list(COUNTRIES)
