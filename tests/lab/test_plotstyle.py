"""Figure styles: plot re-draws any figure in the default or the paper style, and the style never leaks."""

import matplotlib.pyplot as plt

from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.lens import LogitLensRequest, run_logit_lens
from neurotrace.lab.plotstyle import figure_style, new_figure
from neurotrace.lab.plotting import PlotRequest, run_plot


def test_the_paper_style_is_serif_without_a_grid_and_the_default_comes_back_after():
    with figure_style("paper"):
        fig, ax = new_figure()
        assert plt.rcParams["font.family"] == ["serif"] and not plt.rcParams["axes.grid"]
        assert ax.spines["top"].get_visible() and plt.rcParams["xtick.direction"] == "in"
    plt.close(fig)
    fig, ax = new_figure()
    assert plt.rcParams["font.family"] != ["serif"] and plt.rcParams["axes.grid"]
    assert not ax.spines["top"].get_visible()
    plt.close(fig)


def test_plot_redraws_a_run_in_the_paper_style_as_a_different_image(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    run = run_logit_lens(LogitLensRequest(model=str(tiny_gpt2), prompt="the capital of france is"), lab=lab)
    plain = run_plot(PlotRequest(run_id=run.run_id, kind="target_curve"), lab=lab)
    paper = run_plot(PlotRequest(run_id=run.run_id, kind="target_curve", style="paper"), lab=lab)

    def png(result):
        return lab.store.artifact_path(result.run_id, "figures/target_curve.png").read_bytes()

    def svg(result):
        return lab.store.artifact_path(result.run_id, "figures/target_curve.svg").read_text(encoding="utf-8")

    assert png(plain) != png(paper)
    assert "Serif" in svg(paper) and "Serif" not in svg(plain)


def test_tokens_the_font_cannot_draw_are_spelled_out_and_raise_no_glyph_warning():
    """Real vocabularies hold CJK and Thai tokens; DejaVu Sans has no glyph for them. Drawn as-is they are
    empty boxes (and a warning, an error under pytest); finish() writes them as \\u escapes instead."""
    import io

    from neurotrace.lab.plotstyle import finish, new_figure

    fig, ax = new_figure()
    ax.set_xticks([0, 1, 2], ["屿", " Paris", "é\U00020000"])
    ax.set_title("รา")
    finish(fig, "top tokens")
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["\\u5c7f", " Paris", "é\\U00020000"] and ax.get_title() == "\\u0e23\\u0e32"
    fig.savefig(io.BytesIO(), format="png")        # filterwarnings = error: a missing glyph would raise
