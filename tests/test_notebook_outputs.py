"""What a learner sees in the saved outputs of an executed notebook (nbconvert, GitHub's viewer, Colab's first run):
no progress bars, no warnings on stderr, no raw widget reprs (`VBox(children=...`). Notebooks 01 and 03 hold the
course's widgets; 01 also loads IMDB into an empty datasets cache, where datasets draws its bars."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RAW_REPR = re.compile(r"^(VBox|HBox|interactive|Textarea|FloatSlider|IntSlider|Output)\(")
BARS = re.compile(r"^(Generating \w+ split|Casting the dataset|Filter|Map|Loading weights)[^:\n]*:|(examples|it)/s\]",
                  re.MULTILINE)


@pytest.mark.parametrize("name", ["01_imdb_and_reward.ipynb", "03_clipped_ppo_objective.ipynb"])
def test_executed_notebook_shows_only_what_the_lesson_means(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))  # a first run: datasets generates splits
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
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
