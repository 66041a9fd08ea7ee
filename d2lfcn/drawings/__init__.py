"""Draw the book's schematic figures and data figures: book-only code, not the library.

Every function returns a matplotlib Figure; `plotting.save_figure` writes one to disk,
and `python -m d2lfcn.figures` draws them all into img/. The numbers drawn come from
the library (`trans_conv`, `kernel2matrix`, `conv_output_shape`, ...), so a figure
cannot drift from the code it shows. Explained in chapters/index.md.
"""
from . import architecture, canvas, convolution, dataset, heatmaps, transposed
from .architecture import *  # noqa: F401,F403
from .canvas import *        # noqa: F401,F403
from .convolution import *   # noqa: F401,F403
from .dataset import *       # noqa: F401,F403
from .heatmaps import *      # noqa: F401,F403
from .transposed import *    # noqa: F401,F403

__all__ = (canvas.__all__ + convolution.__all__ + transposed.__all__ + architecture.__all__
           + dataset.__all__ + heatmaps.__all__)
