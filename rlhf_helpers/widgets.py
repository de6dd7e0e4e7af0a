"""Small ipywidgets explorers that degrade to static output when no widget frontend is attached
(nbmake, `jupyter nbconvert`, a plain terminal): the static part is always printed or drawn, and the
interactive part is shown on top of it when ipywidgets can render."""

from __future__ import annotations


def _in_notebook_kernel() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except (ImportError, AttributeError):
        return False


def interactive_available() -> bool:
    """True when ipywidgets is importable and we run in a Jupyter kernel (a frontend may render them)."""
    if not _in_notebook_kernel():
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def reward_explorer(reward, examples: list[str]) -> None:
    """Type a review, see its POSITIVE logit. Static fallback: a table of `examples` and their scores."""
    import pandas as pd
    from IPython.display import display

    scores = reward(examples).tolist()
    display(pd.DataFrame({"text": examples, "POSITIVE logit": [round(s, 3) for s in scores]}))
    if not interactive_available():
        return
    import ipywidgets as w

    box = w.Textarea(value=examples[0], description="Review:", layout=w.Layout(width="90%", height="70px"))
    out = w.HTML()

    def update(*_):
        text = box.value
        if not text.strip():
            out.value = "<i>type something to score</i>"
            return
        s = reward([text]).item()
        colour = "green" if s > 0 else "crimson"
        out.value = f"POSITIVE logit: <b style='color:{colour}'>{s:+.3f}</b> ({'positive' if s > 0 else 'negative'})"

    box.observe(update, names="value")
    update()
    display(w.VBox([box, out]))
