"""What a learner sees in the saved outputs of an executed notebook (nbconvert, GitHub's viewer, Colab's first run):
no progress bars, no warnings on stderr, no raw widget reprs (`VBox(children=...`). Notebook 01 loads IMDB into an
empty datasets cache, where datasets draws its bars, and shows the reward explorer; the other explorers (04's clip
explorer, 05's sample browser) go through the same `show_widget`, checked below without a kernel."""

import re

import pytest

RAW_REPR = re.compile(r"^(VBox|HBox|interactive|Textarea|FloatSlider|IntSlider|Output)\(")
BARS = re.compile(r"^(Generating \w+ split|Casting the dataset|Filter|Map|Loading weights)[^:\n]*:|(examples|it)/s\]",
                  re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_imdb_and_reward.ipynb"])
def test_executed_notebook_shows_only_what_the_lesson_means(name, executed_notebook):
    # nbmake's own execution of the notebook, shared (conftest.py, SHARED_NOTEBOOKS): a first run, with an empty
    # datasets cache where datasets generates the splits
    nb = executed_notebook(name)
    widgets = 0
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            where = f"{name} cell {index}"
            if output.get("output_type") == "stream":
                assert output["name"] == "stdout", f"{where} wrote to stderr: {output['text'][:300]}"
                assert not BARS.search(output["text"]), f"{where} printed a progress bar: {output['text'][:300]}"
            plain = output.get("data", {}).get("text/plain", "")
            assert not RAW_REPR.match(plain), f"{where} shows a widget's repr: {plain[:200]}"
            assert not BARS.search(plain), f"{where} shows a progress bar: {plain[:200]}"
            if "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                widgets += 1
                assert plain.startswith("[interactive in Jupyter"), f"{where}: {plain[:200]}"
    assert widgets >= 1, "the notebook's explorer is a widget where a kernel can render one"


def test_every_explorer_shows_a_sentence_not_its_repr(monkeypatch):
    import ipywidgets as w
    from IPython import display as ipython_display

    from rlhf_helpers import widgets

    shown = []
    monkeypatch.setattr(ipython_display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    for widget in (w.VBox([w.Textarea()]), w.interactive(lambda eps: None, eps=w.FloatSlider(value=0.2))):
        widgets.show_widget(widget, "interactive in Jupyter: an explorer")
    for bundle, raw in shown:
        assert raw and bundle["text/plain"] == "[interactive in Jupyter: an explorer]"
        assert "application/vnd.jupyter.widget-view+json" in bundle  # a frontend still renders the live widget


def test_the_clip_explorer_stores_its_first_figure_for_viewers_without_widgets(monkeypatch):
    import base64

    from IPython import display as ipython_display

    from rlhf_helpers import widgets

    shown = []
    monkeypatch.setattr(widgets, "interactive_available", lambda: True)
    monkeypatch.setattr(ipython_display, "display", lambda obj, raw=False: shown.append((obj, raw)))
    widgets.clip_objective_explorer(0.2)
    (bundle, raw), = shown
    assert raw and "application/vnd.jupyter.widget-view+json" in bundle  # the live slider, where a frontend renders it
    assert bundle["text/plain"].startswith("[interactive in Jupyter") and "ε = 0.2" in bundle["text/plain"]
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")  # the figure, where none does
