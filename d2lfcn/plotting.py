"""Plot images, label maps, training curves and D2L's prediction grid; save figures.

matplotlib is imported where a figure is drawn, so `import d2lfcn` stays
light. Explained in chapters/fcn.md.
"""
import numpy as np

from .inference import label2image
from .segmaps import full_palette
from .utils import atomic_path, to_numpy

__all__ = ['show_images', 'plot_training_curves', 'plot_predictions', 'plot_runs',
           'CURVE_LABELS', 'save_figure']


def save_figure(fig, path, dpi=100, tight=True):
    """Write `fig` to `path` atomically and close it; return `path`.

    `tight` crops the canvas to what is drawn (schematics); False keeps the
    figure's own size in pixels (figsize x dpi). Explained in chapters/index.md.
    """
    from matplotlib import pyplot as plt
    with atomic_path(path) as tmp:
        if tight:
            fig.savefig(tmp, dpi=dpi, bbox_inches='tight', facecolor='white')
        else:
            fig.savefig(tmp, dpi=dpi)
    plt.close(fig)  # a no-op for a Figure pyplot does not manage
    return path


def _draw_images(axes, imgs, titles=None, palette=None):
    """Show one image per axes, without ticks; 2-D label maps are coloured."""
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        img = to_numpy(img)
        if img.ndim == 2:
            img = label2image(img, palette)
        # Nearest: each label pixel keeps its exact class colour on screen.
        ax.imshow(img, interpolation='nearest')
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    return axes


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5):
    """Plot a list of images (D2L's show_images).

    Explained in chapters/fcn.md.
    """
    from matplotlib import pyplot as plt
    figsize = (num_cols * scale, num_rows * scale)
    _, axes = plt.subplots(num_rows, num_cols, figsize=figsize, squeeze=False)
    return _draw_images(axes.flatten(), imgs, titles)


def plot_training_curves(history):
    """Return a Figure of loss, train acc, test acc and test mIoU per epoch.

    `history` is a list of dicts with keys epoch, loss, train_acc, test_acc
    and test_miou (what d2lfcn.train records). Explained in chapters/fcn.md.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(3.5, 2.5))
    ax = fig.add_subplot()
    epochs = [r['epoch'] for r in history]
    for key, label, fmt in (('loss', 'train loss', 'b-'), ('train_acc', 'train acc', 'm--'),
                            ('test_acc', 'test acc', 'g-.'), ('test_miou', 'test mIoU', 'r:')):
        ax.plot(epochs, [r[key] for r in history], fmt, label=label,
                marker='o' if len(history) < 3 else None, markersize=3)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5 if len(epochs) == 1 else min(epochs),
                    max(epochs) + 0.5 if len(epochs) == 1 else max(epochs))
    ax.grid(True)
    ax.legend(fontsize='small')
    fig.tight_layout()
    return fig


def plot_predictions(imgs, preds, labels, scale=2,
                     row_titles=('image', 'prediction', 'ground truth'), title=None,
                     class_names=None, palette=None):
    """Return D2L's grid: images on top, predicted label maps, then ground truth.

    `imgs` are (H, W, 3) images (floats in [0, 1] or uint8); `preds` and
    `labels` are (H, W) class-id maps (coloured with `palette`, by default
    VOC's) or colour images. `row_titles` name the three rows at the left
    (None: no titles); `title` goes above the grid; with `class_names`, a
    legend below it names the colour of every class in the maps.
    Explained in chapters/fcn.md.
    """
    from matplotlib.figure import Figure
    n = len(imgs)
    legend = class_names is not None
    fig = Figure(figsize=(n * scale, 3 * scale + (0.5 if legend else 0)))
    axes = fig.subplots(3, n, squeeze=False)
    _draw_images(axes.flatten(), list(imgs) + list(preds) + list(labels), palette=palette)
    left = 0.02 if row_titles is None else 0.02 + 0.25 / (n * scale)  # room for a title
    top = 0.98 if title is None else 1 - 0.4 / (3 * scale)  # room for a title
    bottom = 0.02 + (0.5 / (3 * scale + 0.5) if legend else 0)  # room for a legend
    fig.subplots_adjust(left=left, right=0.98, bottom=bottom, top=top,
                        wspace=0.05, hspace=0.05)
    if legend:
        _add_legend(fig, list(preds) + list(labels), class_names, palette)
    if title is not None:
        fig.suptitle(title, fontsize=10, y=1 - 0.1 / (3 * scale), va='top')
    for ax, title in zip(axes[:, 0], row_titles or ()):
        # In the margin, centred on the row; text is not clipped to its axes.
        ax.text(-0.04, 0.5, title, transform=ax.transAxes, rotation=90,
                ha='right', va='center', fontsize=10)
    return fig


def _add_legend(fig, maps, class_names, palette=None):
    """Name, below the grid, the colour of every class that `maps` show."""
    from matplotlib.patches import Patch
    palette = full_palette(palette)
    present = sorted({int(c) for m in maps for c in np.unique(to_numpy(m))
                      if c < len(class_names)})
    handles = [Patch(facecolor=np.asarray(palette[c]) / 255, edgecolor='black',
                     label=class_names[c]) for c in present]
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 6),
               fontsize=8, frameon=False)


# Axis titles of the per-epoch scores `train_ch13` and `fit` record.
CURVE_LABELS = {'loss': 'training loss', 'train_acc': 'training accuracy',
                'test_acc': 'test accuracy (centred crops)',
                'test_miou': 'test mIoU (centred crops)',
                'whole_acc': 'pixel accuracy (whole images)',
                'whole_miou': 'mIoU (whole images)'}


def plot_runs(histories, keys=('loss', 'test_miou'), title=None):
    """Return a Figure with one panel per score in `keys`, one curve per run.

    `histories` maps a run's name to its epoch records (as `train_ch13`
    returns them), so that runs trained alike can be compared at a glance;
    `title` goes above the panels. Explained in chapters/fcn.md.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(3.2 * len(keys), 2.6))
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    styles = ['b-', 'r--', 'g-.', 'm:']
    epochs = sorted({r['epoch'] for history in histories.values() for r in history})
    for ax, key in zip(axes, keys):
        for (name, history), fmt in zip(histories.items(), styles * len(histories)):
            ax.plot([r['epoch'] for r in history], [r[key] for r in history], fmt,
                    label=name, marker='o', markersize=3)
        ax.set_title(CURVE_LABELS.get(key, key), fontsize=10)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(epochs) == 1:  # one epoch: a point, not a zoom into fractions of one
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.grid(True)
    axes[0].legend(fontsize='small')
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
