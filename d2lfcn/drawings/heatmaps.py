"""Draw class heatmaps over an image: one row per class or group, one column per size.

Explained in chapters/fully-convolutional-classifier.md.
"""
import textwrap

import numpy as np

from ..classifier import (class_groups, class_heatmaps, combine_heatmaps, group_heatmap,
                          groups_found, to_fully_convolutional)
from ..utils import to_numpy

__all__ = ['plot_heatmaps', 'heatmap_figure']


def plot_heatmaps(img, maps, sizes, rows, combined=None, title=None):
    """Draw heatmaps over the image: one row per class or group, one column per map.

    `rows` lists (label, class indices): a row shows the probability of its
    class, or the summed probability of its group (`group_heatmap`).
    `combined` is an optional dict {name: (C, h, w) map}, such as the
    arithmetic and geometric combinations. Returns the Figure.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    columns = [(f'{s} px:\n{m.shape[1]} x {m.shape[2]} cells', m) for s, m in zip(sizes, maps)]
    columns += list((combined or {}).items())
    img = np.asarray(img)
    h, w = img.shape[:2]
    from matplotlib import pyplot as plt
    side = 1.35                          # inches per panel: 7-8 inches fit a book page
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False, layout='constrained',
                             figsize=(side * len(columns) + 1.4,
                                      side * len(rows) * h / w + 1.0))
    for r, (label, ids) in enumerate(rows):
        axes[r, 0].set_ylabel(textwrap.fill(label, 16), fontsize=9)
        for k, (name, m) in enumerate(columns):
            ax = axes[r, k]
            ax.imshow(img)
            heat = to_numpy(group_heatmap(m, ids))
            # extent stretches the map over the image: cells are 32 input pixels
            # apart, so each is drawn as a 32-pixel square (it sees far more).
            shown = ax.imshow(heat, cmap='jet', alpha=0.55, vmin=0, vmax=1,
                              extent=(0, w, h, 0), interpolation='nearest')
            if r == 0:
                ax.set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=axes, shrink=min(1.0, 2.5 / len(rows)), aspect=25)
    bar.set_label('probability (of a group: the sum)', fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 16 * len(columns)), fontsize=9)
    return fig


def _row_label(name, ids, classes):
    """Name a heatmap row: a class, or a group with its members."""
    if len(ids) == 1 and classes[ids[0]] == name:
        return name
    if len(ids) <= 3:
        return f'{name} = ' + ' + '.join(classes[i] for i in ids)
    return f'{name} ({len(ids)} classes)'


def heatmap_figure(classifier, img, sizes, class_names=None, top=3, groups=None):
    """Compute heatmaps of `img` at `sizes`, combine them, and plot classes and groups.

    `class_names` are names from `classifier.classes`; by default the `top`
    classes of the arithmetic combination, averaged over the image. `groups`
    names groups of `class_groups(classifier.classes)`, each drawn as one
    more row; by default those the arithmetic combination finds
    (`groups_found`), so no group is drawn that the classifier does not see
    in the image. Returns the Figure.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    fcn = to_fully_convolutional(classifier.net)
    maps = class_heatmaps(fcn, img, sizes)
    combined = {'arithmetic mean': combine_heatmaps(maps, 'arithmetic'),
                'geometric mean': combine_heatmaps(maps, 'geometric')}
    if class_names is None:
        overall = combined['arithmetic mean'].mean(axis=(1, 2)).asnumpy()  # (C,)
        class_ids = [int(i) for i in np.argsort(-overall)[:top]]
    else:
        class_ids = [classifier.classes.index(name) for name in class_names]
    known = class_groups(classifier.classes)
    if groups is None:
        groups = groups_found(combined['arithmetic mean'], known)
    rows = [(classifier.classes[i], [i]) for i in class_ids]
    rows += [(_row_label(g, known[g], classifier.classes), known[g]) for g in groups]
    return plot_heatmaps(img, maps, sizes, rows, combined, title=classifier.summary)
