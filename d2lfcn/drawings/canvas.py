"""Give the book's drawings what they share: pyplot on demand, grids of numbers, colours.

The drawing modules next to this one import these helpers by name; only
`sample_photo`, the photo several figures and chapters use, is re-exported.
Explained in chapters/index.md.
"""
import numpy as np

__all__ = ['sample_photo']


# Soft colours: one per input element, kernel entry or output channel.
PALETTE = ['#a6cee3', '#fdbf6f', '#b2df8a', '#fb9a99', '#cab2d6', '#ffff99',
            '#8dd3c7', '#fccde5', '#d9d9d9']
PLAIN = '#eef3fb'


def pyplot():
    # pyplot is imported on the first drawing, so `import d2lfcn` stays light.
    from matplotlib import pyplot
    return pyplot


def patches():
    from matplotlib import patches
    return patches


def sample_photo():
    """Return matplotlib's Grace Hopper photo as a (600, 512, 3) uint8 array.

    Explained in chapters/transposed-conv.md.
    """
    from matplotlib.cbook import get_sample_data
    with get_sample_data('grace_hopper.jpg') as f:
        return pyplot().imread(f, format='jpg')


def fmt(v):
    """Format a number for a grid cell: integers without a decimal point."""
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f'{v:.2f}'


def grid(ax, values, x0, y0, colors=None, title=None, blank=None, hatch=None,
          fontsize=11):
    """Draw a table of numbers with its top-left corner at (x0, y0) in cell units.

    `colors[i][j]` fills cell (i, j); `blank[i][j]` leaves it empty; cells
    where `hatch[i][j]` is true are greyed out and crossed.
    """
    values = np.asarray(values, dtype=np.float64)
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            crossed = hatch is not None and hatch[i][j]
            face = '#dddddd' if crossed else (colors[i][j] if colors else PLAIN)
            ax.add_patch(patches().Rectangle(
                (x0 + j, y0 + i), 1, 1, facecolor=face, edgecolor='#555555',
                hatch='//' if crossed else None, linewidth=1))
            if blank is None or not blank[i][j]:
                ax.text(x0 + j + 0.5, y0 + i + 0.5, fmt(values[i, j]),
                        ha='center', va='center', fontsize=fontsize,
                        color='#888888' if crossed else 'black')
    if title:
        ax.text(x0 + cols / 2, y0 - 0.25, title, ha='center', va='bottom',
                fontsize=fontsize)


def canvas(width, height, scale=0.55):
    """Return (fig, ax) with data units = grid cells, y pointing down."""
    fig, ax = pyplot().subplots(figsize=(width * scale, height * scale))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect('equal')
    ax.axis('off')
    return fig, ax


def pair(value):
    """Return `value` as an (h, w) tuple; an int stands for both axes."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)
