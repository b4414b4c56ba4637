"""History.plot: training and validation curves per metric, drawn with matplotlib."""

import os

SKIP = ("samples_per_second", "lr")


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "History.plot needs matplotlib, an optional dependency: "
            'pip install "fastnn[plot]" (or pip install matplotlib)'
        ) from None
    return Figure, FigureCanvasAgg


def plot_history(history, path=None, metrics=None):
    if metrics is None:
        metrics = [k for k in history.history if not k.startswith("val_") and k not in SKIP]
        metrics += [  # validation-only metrics (none today, but keep them visible)
            k[4:] for k in history.history if k.startswith("val_") and k[4:] not in metrics
        ]
    elif isinstance(metrics, str):
        metrics = [metrics]
    else:
        metrics = list(metrics)
    for name in metrics:
        if name not in history.history and "val_" + name not in history.history:
            raise ValueError(
                f"metrics: {name!r} was not recorded; recorded: {sorted(history.history)}"
            )
    if not metrics:
        raise ValueError("metrics is empty: nothing to plot")
    Figure, FigureCanvasAgg = _matplotlib()
    # A Figure built without pyplot renders with Agg and leaves the user's backend alone.
    fig = Figure(figsize=(4.5 * len(metrics), 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = [e + 1 for e in history.epoch]
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for key, label, style in ((name, "training", "-o"), ("val_" + name, "validation", "-s")):
            if key in history.history:
                ax.plot(epochs, history.history[key], style, markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        ax.legend()
    if path is not None:
        fig.savefig(os.fspath(path), format="png", dpi=100)
    return fig
