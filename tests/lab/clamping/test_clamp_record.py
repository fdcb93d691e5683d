"""clamp_results.json is the JSON dump of its typed record, reads back unchanged, and redraws the run's figures."""

import pytest

from neurotrace import ClampSweepRequest, run_clamp_sweep
from neurotrace.lab.clamping.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.clamping.schema import ClampResults
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.plotting import PlotRequest, run_plot
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.planted_clamp import build_repetition_model
from neurotrace.testing.records import assert_redraws, read_back

KEYS = {"model", "neurons", "neuron_mode", "position", "max_new_tokens", "thresholds", "n_prompts", "n_rows",
        "n_settings", "n_collapsed_baselines", "n_recovered", "baseline_collapse_types", "controls", "groups",
        "notes", "per_value", "controls_per_value", "collapsed", "tokens_generated", "seconds"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_repetition_model(tmp_path_factory.mktemp("planted") / "m", layer=1, index=3)


@pytest.fixture(scope="module")
def swept(planted, tmp_path_factory):
    """One planted sweep with a random-neuron control: every baseline loops; clamping 1:3 to <= 0 recovers it."""
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("runs")))
    request = ClampSweepRequest(model=str(planted), neurons=["1:3"], prompts=["the cat", "a"], max_new_tokens=12,
                                values=[-5, 0, None, 10], controls=1)
    return lab, run_clamp_sweep(request, lab=lab)


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(swept):
    lab, result = swept
    rec = read_back(lab, result.run_id, RESULTS_FILE, ClampResults.model_validate)
    assert set(lab.store.read_json(result.run_id, RESULTS_FILE)) == KEYS      # the keys earlier runs saved
    assert rec.per_value == result.per_value and rec.groups == result.groups and rec.notes == result.notes
    assert (rec.n_prompts, rec.n_rows, rec.n_settings) == (2, result.n_rows, 1 + 3 + 3)
    assert rec.n_collapsed_baselines == rec.n_recovered == len(rec.collapsed) == 2
    assert rec.baseline_collapse_types == result.baseline_collapse_types == {"empty": 0, "loop": 2, "repetitive": 0}
    assert {c.collapse_type for c in rec.collapsed} == {"loop"}
    assert all([r.value for r in c.recovered_by] == [-5.0, 0.0] for c in rec.collapsed)  # 10 keeps the loop
    assert all(c.recovered_by_controls == 0 and c.baseline.split()[0] == "tree" for c in rec.collapsed)
    assert [s.control_of for s in rec.controls_per_value] == ["1:3"] * 3
    assert_redraws(lab, result.run_id, FIGURES, rec)
    recovered = FIGURES["improvement_rate"](rec).axes[0].get_lines()[0]
    assert list(recovered.get_xdata()) == [-5.0, 0.0, 10.0] and list(recovered.get_ydata()) == [1.0, 1.0, 0.0]


def test_plot_redraws_the_clamp_figures_from_the_saved_json(swept):
    lab, result = swept
    drawn = run_plot(PlotRequest(run_id=result.run_id), lab=lab)
    assert drawn.kinds == list(FIGURES)
    for kind in FIGURES:
        saved = lab.store.artifact_path(result.run_id, f"figures/{kind}.svg").read_bytes()
        assert lab.store.artifact_path(drawn.run_id, f"figures/{kind}.svg").read_bytes() == saved, kind


def test_a_results_file_that_is_not_the_record_cannot_be_drawn(swept):
    lab, result = swept
    data = lab.store.read_json(result.run_id, RESULTS_FILE)
    with pytest.raises(ValueError, match="per_value"):
        FIGURES["sweep_metrics"]({k: v for k, v in data.items() if k != "per_value"})
    with pytest.raises(ValueError, match="colour"):
        FIGURES["improvement_rate"](data | {"colour": "red"})
    with raises_lab_error(InputError) as err:
        run_plot(PlotRequest(run_id=result.run_id, kind="sweep_metrics", options={"neurons": ["9:9"]}), lab=lab)
    assert "no neuron group among ['9:9']" in err.value.message
