"""Hand a value a cell computes to the chapter's prose: MyST-NB's glue, when the book is built.

Prose never types a number that a cell computes. The cell calls
`d2lfcn.glue('transfer_miou', miou)` and the text says
{glue:text}`transfer_miou:.3f`, which the book fills in from that very run.
Explained in chapters/index.md.
"""
import numbers
import sys

__all__ = ['glue']


def glue(name, value):
    """Keep `value` for the book's text under `name`; return `value`.

    In a Jupyter kernel with MyST-NB installed (the book's build) the value
    is stored, hidden, in the cell's output; elsewhere nothing happens.
    Explained in chapters/index.md.
    """
    ipython = sys.modules.get('IPython')
    if ipython is None or ipython.get_ipython() is None:
        return value
    try:
        from myst_nb import glue as myst_glue
    except ImportError:  # a notebook outside the book: the text shows the role
        return value
    # numpy scalars print as np.float64(...) on numpy 2: store plain numbers.
    if isinstance(value, numbers.Integral):
        plain = int(value)
    elif isinstance(value, numbers.Real):
        plain = float(value)
    else:
        plain = value
    myst_glue(name, plain, display=False)
    return value
