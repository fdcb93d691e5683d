"""Issue 23 item 4: at most max_jobs jobs run at once, their memory estimates within the budget together;
the rest wait in line, first come first served."""

from neurotrace.lab.jobs import Admission
from neurotrace.lab.lab import Lab, LabSettings, _max_jobs, available_cores

MiB = 2**20


def test_jobs_beyond_the_limit_wait_in_line_and_start_in_order_as_slots_free():
    line = Admission(max_jobs=2, budget=1000 * MiB)
    a, b, c, d = (line.enter(MiB) for _ in range(4))
    assert line.try_start(a) and line.try_start(b)
    assert not line.try_start(d)  # not first in line: never overtakes
    assert not line.try_start(c)
    assert (line.place(c), line.place(d)) == (1, 2) and line.counts() == (2, 2)
    assert "place 1 of 2" in line.why(c) and "NEUROTRACE_MAX_JOBS=2" in line.why(c)
    assert "place 2 of 2" in line.why(d) and "1 job(s) ahead" in line.why(d)
    line.leave(a)
    assert line.try_start(c) and line.place(c) is None and line.place(d) == 1
    line.leave(d)  # gave up waiting (a cancel): its place is gone
    assert line.counts() == (2, 0)


def test_memory_is_checked_against_the_sum_of_the_running_jobs_estimates():
    line = Admission(max_jobs=8, budget=100 * MiB)
    big, other, small = line.enter(60 * MiB), line.enter(50 * MiB), line.enter(MiB)
    assert line.try_start(big)
    assert not line.try_start(other)   # 60 + 50 > 100 though one slot of 8 is taken
    why = line.why(other)
    assert "memory budget of 100 MiB" in why and "NEUROTRACE_MEMORY_BUDGET" in why and "60 MiB" in why
    assert not line.try_start(small)   # fits, but waits its turn behind `other`
    line.leave(big)
    assert line.try_start(other) and line.try_start(small)


def test_a_job_alone_always_starts_even_over_a_budget_lowered_since_it_was_checked():
    line = Admission(max_jobs=1, budget=MiB)
    ticket = line.enter(10 * MiB)
    assert line.try_start(ticket)


def test_the_limit_defaults_to_the_cores_and_is_configurable(tmp_path, monkeypatch):
    assert Lab(LabSettings(runs_dir=tmp_path / "a")).admission.max_jobs == available_cores()
    assert Lab(LabSettings(runs_dir=tmp_path / "b", max_jobs=3)).admission.max_jobs == 3
    monkeypatch.setenv("NEUROTRACE_MAX_JOBS", "5")
    assert LabSettings.from_env(runs_dir=tmp_path / "c").max_jobs == 5
    assert _max_jobs(None) is None
    for bad in ("0", "many"):
        try:
            _max_jobs(bad)
        except ValueError as exc:
            assert "NEUROTRACE_MAX_JOBS" in str(exc)
        else:
            raise AssertionError(bad)
