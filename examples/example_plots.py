"""PNG plots of the example scripts (matplotlib, no display needed).

* `plot_spectra`: each layer's singular values (normalized by the largest)
  and the share of energy its top singular values hold, with the rank kept,
  at one or more moments side by side (`spectra_column`), e.g. before
  LRPET's first projection and at the end of training.
* `plot_ranks`: per layer, the max rank K, the rank kept and the break-even
  rank below which the factorized form is cheaper.
* `plot_sweep`: accuracy against MACs for runs at several prune ratios, with
  the dense baseline.
"""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["kernel_spectra", "plot_ranks", "plot_spectra", "plot_sweep", "spectra_column"]

_MANY_LAYERS = 10


def kernel_spectra(model, names=None):
    """Singular values (descending) of each conv/dense kernel's matrix view.

    Args:
        model: A Keras model.
        names: Only these layers (default: every layer with a >= 2-D kernel).

    Returns:
        Dict layer name -> numpy array, in the model's layer order.
    """
    spectra = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if (
            kernel is None
            or len(kernel.shape) < 2
            or (names is not None and layer.name not in names)
        ):
            continue
        matrix = np.asarray(kernel.numpy(), np.float64)
        spectra[layer.name] = np.linalg.svd(matrix.reshape(-1, matrix.shape[-1]), compute_uv=False)
    return spectra


def _layer_colors(names):
    """Layer name -> colour: a qualitative palette up to 10 layers, else a colour map."""
    if len(names) <= _MANY_LAYERS:
        return {name: plt.cm.tab10(i) for i, name in enumerate(names)}
    return dict(zip(names, plt.cm.viridis(np.linspace(0.0, 0.92, len(names)))))


def spectra_column(title, spectra, marks=None, mark_label="rank kept r"):
    """One column of `plot_spectra`.

    Args:
        title: What the spectra are (e.g. "before the first projection").
        spectra: Layer name -> singular values (any order), in layer order.
        marks: Layer name -> a rank to mark with a dot (missing: none).
        mark_label: What the dots mean (None: no dots).
    """
    return {"title": title, "spectra": spectra, "marks": marks or {}, "mark_label": mark_label}


def plot_spectra(columns, path, title):
    """Plots singular-value spectra per layer at one or more moments, side by side.

    Each column is one moment (e.g. before the first projection, end of
    training): on top each layer's singular values normalized by the
    largest, below the share of the energy its top r singular values hold;
    a dot marks each layer's rank (the rank kept, or the break-even rank of a
    dense model). A layer has the same colour in every column.

    Args:
        columns: `spectra_column(...)` dicts, left to right.
        path: Output PNG path.
        title: Figure title.

    Returns:
        `path`.
    """
    names = []
    for column in columns:
        for name, s in column["spectra"].items():
            if name not in names and len(s) and np.max(s) > 0:
                names.append(name)
    colors = _layer_colors(names)
    many = len(names) > _MANY_LAYERS
    fig, axes = plt.subplots(
        2,
        len(columns),
        figsize=(6.4 * len(columns) + (1.0 if many else 2.2), 9.0),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    for index, column in enumerate(columns):
        top, bottom = axes[0, index], axes[1, index]
        marks, dots = column["marks"], column["mark_label"] is not None
        for name in names:
            s = np.asarray(column["spectra"].get(name, ()), np.float64)
            if not len(s) or np.max(s) <= 0:
                continue
            s = np.sort(s)[::-1]
            position = np.arange(1, len(s) + 1) / len(s)
            normalized = np.maximum(s / s[0], 1e-8)
            energy = np.cumsum(s**2) / np.sum(s**2)
            color = colors[name]
            top.plot(position, normalized, color=color, lw=1.4, alpha=0.9)
            bottom.plot(position, energy, color=color, lw=1.4, alpha=0.9)
            rank = marks.get(name)
            if dots and rank:
                at = min(int(rank), len(s)) - 1
                style = dict(color=color, ms=7, mec="black", mew=0.6, zorder=3)
                top.plot((at + 1) / len(s), normalized[at], "o", **style)
                bottom.plot((at + 1) / len(s), energy[at], "o", **style)
        top.set_yscale("log")
        top.set_title(column["title"], fontsize=11)
        top.set_xlabel("singular value index i / K (K = max rank of the layer)")
        bottom.set_xlabel("rank r / K")
        bottom.set_title(
            "energy in the top r singular values"
            + (f"; dots: {column['mark_label']}" if dots and marks else ""),
            fontsize=10,
        )
        bottom.set_ylim(0, 1.02)
        for ax in (top, bottom):
            ax.set_xlim(0, 1.0)
            ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("singular value s_i / s_1 (log scale)")
    axes[1, 0].set_ylabel("fraction of sum s_i^2")
    if many:
        mappable = plt.cm.ScalarMappable(
            cmap=plt.cm.viridis, norm=matplotlib.colors.Normalize(0, len(names) - 1)
        )
        bar = fig.colorbar(mappable, ax=axes, fraction=0.03, pad=0.02)
        bar.set_label(f"layer index (0 = {names[0]}, {len(names) - 1} = {names[-1]})")
    else:
        handles = [
            matplotlib.lines.Line2D([], [], color=colors[name], lw=2, label=name) for name in names
        ]
        fig.legend(handles=handles, title="layer", loc="outside right center", fontsize=9)
    fig.suptitle(title)
    return _save(fig, path, tight=True)


def plot_ranks(layers, path, title):
    """Bar chart per layer: max rank K, rank kept, break-even rank.

    Args:
        layers: Dicts with `name`, `max_rank`, `rank`, `break_even` and
            optionally `projected` (False: drawn as "not compressed"), the
            rows of `example_reports.layer_rows`.
        path: Output PNG path.
        title: Figure title.
    """
    names = [r["name"] for r in layers]
    x = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.32 * len(layers) + 3), 5.5))
    ax.bar(x, [r["max_rank"] for r in layers], color="0.82", label="max rank K = min(rows, cols)")
    kept = [r.get("projected", True) for r in layers]
    ax.bar(
        x[kept],
        [r["rank"] for r, k in zip(layers, kept) if k],
        width=0.55,
        color="tab:blue",
        label="rank kept r",
    )
    if not all(kept):
        other = [not k for k in kept]
        ax.bar(
            x[other],
            [r["rank"] for r, k in zip(layers, kept) if not k],
            width=0.55,
            color="lightsteelblue",
            hatch="//",
            edgecolor="tab:blue",
            label="numerical rank (layer not compressed)",
        )
    ax.scatter(
        x,
        [r["break_even"] for r in layers],
        marker="_",
        s=260,
        linewidths=2.5,
        color="tab:red",
        zorder=3,
        label="break-even rank (factorized form cheaper below it)",
    )
    step = max(1, len(layers) // 60)
    ax.set_xticks(x[::step])
    ax.set_xticklabels(names[::step], rotation=90, fontsize=7 if len(layers) > 20 else 9)
    ax.set_xlim(-0.7, len(layers) - 0.3)
    ax.set_xlabel("layer (input to output)")
    ax.set_ylabel("rank (number of singular values)")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, tight=True)


def plot_sweep(points, path, title, baseline=None):
    """Plots top-1 accuracy against MACs for a sweep of prune ratios.

    Args:
        points: Dicts with `macs` (per image), `accuracy` (0..1) and `label`
            (e.g. "g=0.5"); optionally `tflite_accuracy`.
        path: Output PNG path.
        title: Figure title.
        baseline: Optional dict with `macs` and `accuracy` of the dense model.
    """
    points = sorted(points, key=lambda p: p["macs"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    macs = np.asarray([p["macs"] for p in points], np.float64) / 1e6
    acc = np.asarray([p["accuracy"] for p in points]) * 100
    ax.plot(macs, acc, "o-", color="tab:blue", label="LRPET compact model (Keras)")
    if all(p.get("tflite_accuracy") is not None for p in points):
        tfl = np.asarray([p["tflite_accuracy"] for p in points]) * 100
        ax.plot(macs, tfl, "x", color="tab:orange", ms=9, label="same, .tflite float32")
    for m, a, p in zip(macs, acc, points):
        ax.annotate(p["label"], (m, a), textcoords="offset points", xytext=(6, -12), fontsize=9)
    if baseline is not None:
        ax.plot(
            baseline["macs"] / 1e6,
            baseline["accuracy"] * 100,
            "*",
            ms=16,
            color="tab:red",
            label="dense baseline (same recipe)",
        )
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path, tight=False)


def _save(fig, path, tight=False):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
