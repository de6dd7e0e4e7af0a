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


def show_widget(widget, fallback: str, png: str | None = None) -> None:
    """Display `widget` with a readable fallback: where no widget frontend renders it (nbconvert's stored outputs,
    GitHub's viewer, a terminal), a reader sees one sentence instead of its repr (`VBox(children=...`) and, with
    `png` (a base64 PNG, `figure_png`), the figure the widget starts with."""
    from IPython.display import display

    bundle = widget._repr_mimebundle_() if hasattr(widget, "_repr_mimebundle_") else None  # ipywidgets 8
    if isinstance(bundle, dict) and "application/vnd.jupyter.widget-view+json" in bundle:
        display({**bundle, "text/plain": f"[{fallback}]", **({"image/png": png} if png else {})}, raw=True)
    else:  # ipywidgets 7 (Colab) displays itself through _ipython_display_
        display(widget)


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
    show_widget(w.VBox([box, out]), "interactive in Jupyter: type a review, see its POSITIVE logit; the table "
                                    "above is the static version")


def plot_clip_objective(clip_eps: float = 0.2, ax=None):
    """L^CLIP = min(r·A, clip(r, 1-ε, 1+ε)·A) against the ratio r, for A = +1 and A = -1."""
    import matplotlib.pyplot as plt
    import torch

    r = torch.linspace(0.0, 2.0, 401)
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
    for axis, a in zip(ax, (1.0, -1.0)):
        objective = torch.minimum(r * a, r.clamp(1 - clip_eps, 1 + clip_eps) * a)
        axis.plot(r, r * a, ls=":", color="grey", label="unclipped r·A")
        axis.plot(r, objective, lw=2, label="L^CLIP")
        axis.axvspan(1 - clip_eps, 1 + clip_eps, color="green", alpha=0.1, label="clip range 1 ± ε")
        axis.axvline(1.0, color="k", lw=0.5)
        axis.set(title=f"A {'> 0' if a > 0 else '< 0'} (ε = {clip_eps:.2f})", xlabel="ratio r = π/π_old")
    ax[0].set_ylabel("objective (maximised)")
    ax[0].legend(fontsize=8)
    return ax


def clip_objective_explorer(clip_eps: float = 0.2) -> None:
    """An ε slider over the figure when a widget frontend can render it; else one static figure at `clip_eps`."""
    import matplotlib.pyplot as plt

    if not interactive_available():
        plot_clip_objective(clip_eps)
        plt.show()
        return
    import ipywidgets as w

    def redraw(eps: float) -> None:  # returns None: interactive prints whatever the function returns
        plot_clip_objective(eps)
        plt.show()

    # interactive draws the first figure itself, so nothing is drawn before it (that drew the figure twice); the
    # same first figure goes into the output as a PNG, which a viewer without widgets shows instead of the slider.
    explorer = w.interactive(redraw, eps=w.FloatSlider(value=clip_eps, min=0.05, max=0.8, step=0.05,
                                                        description="ε"))
    ax = plot_clip_objective(clip_eps)
    png = figure_png(ax[0].figure)
    plt.close(ax[0].figure)
    show_widget(explorer, f"interactive in Jupyter: an ε slider redrawing L^CLIP, shown here at ε = {clip_eps}",
                png=png)


def figure_png(fig) -> str:
    """A matplotlib figure as a base64 PNG, the form a notebook output stores an image in."""
    import base64
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_browser(history: list[dict], every: int | None = None) -> None:
    """Browse the samples a training run logged at each step. Static fallback: a table at a few steps."""
    import pandas as pd
    from IPython.display import display

    def table(step: int) -> pd.DataFrame:
        return pd.DataFrame(history[step - 1]["samples"]).assign(step=step)

    every = every or max(1, len(history) // 4)
    steps = sorted({1, *range(every, len(history) + 1, every), len(history)})
    display(pd.concat([table(s) for s in steps], ignore_index=True))
    if not interactive_available():
        return
    import ipywidgets as w

    browser = w.interactive(lambda step: display(table(step)),
                            step=w.IntSlider(value=len(history), min=1, max=len(history), description="step"))
    show_widget(browser, "interactive in Jupyter: a step slider over the samples logged during training; the "
                         "table above is the static version")
