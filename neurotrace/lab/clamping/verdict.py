"""Is a clamp's recovery specific to the neurons? The verdict against random same-layer controls.

Each neuron group is swept beside ``controls`` random groups with as many other neurons in the same
layers (:func:`neurotrace.lab.clamping.sweep.draw_controls`), over the same values. Both sides get the
same best-of-sweep selection, so picking the best of 14 values favours neither:

* ``R`` = the group's most recoveries at any value (ties: fewer induced collapses, smaller |value|);
  ``I`` = the collapses it induces at that value;
* ``C_k`` = control ``k``'s most recoveries at any value;
* ``recovery_above_control = (R - mean_k C_k) / B`` with ``B`` collapsed baselines.

Verdict, first rule that applies:

1. ``no collapsed baselines`` if ``B = 0``;
2. ``harmful`` if ``I > R`` (the setting that helps most breaks more healthy prompts than it fixes);
3. ``specific`` if ``R >= max_k C_k + MIN_MARGIN_PROMPTS`` and
   ``recovery_above_control >= MIN_EXCESS``;
4. ``not above control`` otherwise (a random neuron of the layer does about as well).

A ``specific`` verdict on fewer than 5 collapsed baselines or 3 controls says so in its reason (one
recovered prompt against one control is a lead to re-run at scale, not a finding).
"""

from neurotrace.lab.clamping.schema import GroupVerdict, ValueSummary

MIN_EXCESS = 0.2            # recovery above the mean control, as a fraction of collapsed baselines
MIN_MARGIN_PROMPTS = 1      # and at least this many more recoveries than the best control
POWERED_BASELINES, POWERED_CONTROLS = 5, 3   # below either, a `specific` verdict says it is a lead only

RULES = (f"specific: the group's best recovery beats every control's best by >= {MIN_MARGIN_PROMPTS} "
         f"prompt(s) and the mean control's by >= {MIN_EXCESS:.0%} of the collapsed baselines; harmful: at its "
         "best value it induces more collapses than it recovers; otherwise not above control.")


def _best(rows: list[ValueSummary]) -> ValueSummary | None:
    cands = [s for s in rows if s.value is not None]
    return min(cands, key=lambda s: (-s.n_improved, s.n_induced, abs(s.value or 0.0)), default=None)


def group_verdicts(per_value: list[ValueSummary], n_base: int, n_controls: int) -> list[GroupVerdict]:
    """One verdict per requested group (controls are the rows with ``control_of`` set)."""
    groups = list(dict.fromkeys(s.neurons for s in per_value if s.value is not None and s.control_of is None))
    out = []
    for label in groups:
        best = _best([s for s in per_value if s.neurons == label and s.control_of is None])
        controls = {}
        for s in per_value:
            if s.control_of == label:
                controls[s.neurons] = max(controls.get(s.neurons, 0), s.n_improved)
        rec = best.n_improved if best is not None and best.n_improved else 0
        ctrl = list(controls.values())
        above = (rec - sum(ctrl) / len(ctrl)) / n_base if ctrl and n_base else None
        verdict, reason = _decide(rec, best.n_induced if best and rec else 0, ctrl, above, n_base, n_controls)
        out.append(GroupVerdict(neurons=label, best_value=best.value if rec else None, n_recovered=rec,
                                n_induced=best.n_induced if best and rec else 0, control_recovered=ctrl,
                                recovery_above_control=None if above is None else round(above, 4),
                                verdict=verdict, reason=reason))
    return out


def _power(n_base: int, n_controls: int) -> str:
    """A caution when the verdict rests on few collapsed baselines or few controls."""
    if n_base >= POWERED_BASELINES and n_controls >= POWERED_CONTROLS:
        return ""
    return (f"; only {n_base} collapsed baseline(s) and {n_controls} control(s): a lead, not a finding - re-run "
            f"with >= {POWERED_BASELINES} collapsing prompts and >= {POWERED_CONTROLS} controls")


def _decide(rec: int, induced: int, ctrl: list[int], above: float | None, n_base: int,
            n_controls: int) -> tuple[str | None, str]:
    if n_controls == 0:
        return None, "no controls were run (controls=0)"
    if n_base == 0:
        return "no collapsed baselines", "no baseline collapsed, so there is nothing to recover"
    if induced > rec:
        return "harmful", f"at its best value it induces {induced} collapses and recovers {rec}"
    if above is not None and rec >= max(ctrl) + MIN_MARGIN_PROMPTS and above >= MIN_EXCESS:
        return "specific", (f"recovers {rec}/{n_base} vs controls' best {ctrl}: {above:+.0%} of the baselines "
                            f"above the mean control (>= {MIN_EXCESS:.0%})" + _power(n_base, len(ctrl)))
    return "not above control", (f"recovers {rec}/{n_base} vs controls' best {ctrl} (needs >= "
                                 f"{max(ctrl) + MIN_MARGIN_PROMPTS} and >= {MIN_EXCESS:.0%} above the mean "
                                 "control)")
