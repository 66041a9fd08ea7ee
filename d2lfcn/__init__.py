"""d2lfcn: Fully Convolutional Networks, Dive-into-Deep-Learning style.

The book-facing API is re-exported here, like `d2l.xxx`: `d2lfcn.get_fcn`,
`d2lfcn.train_ch13`, ... Importing d2lfcn loads nothing heavy; the first
such name loads the library, and MXNet with it. Modules, by layer (each
imports only the layers below it; chapters/index.md has the same table):

Commands (`python -m d2lfcn.<name>`, thin: flags in, one library call):
  __main__ (environment check), train, predict, export, figures, notebooks,
  book (package: `__main__` builds the book); cli (their shared runner).
The training job:
  job (recipe and fit), distributed (alone or one of several workers).
The library:
  utils, compat, segmaps (numpy pre- and post-processing), image (safe image
  files), download, conv, model, voc, maskfolder (your own dataset), segdata
  (datasets, samplers, loaders), synthetic, metrics, inference, loop
  (train_ch13), runfolder, plotting, classifier, deploy (ONNX and MXNet
  export), runtime (ONNX inference without MXNet).
Book tooling (book only): book.build, book.notebook, book.conf, book.display,
  book.glue, book.standin, book.patches.
Drawings (book only): drawings.canvas, convolution, transposed, architecture,
  dataset, heatmaps.
"""
import importlib
import importlib.util
import os
import sys
import traceback

__version__ = '0.1.0'

# MXNet reads OMP_NUM_THREADS once, at import, and without it uses half the
# cores (it assumes hyper-threading): on a 2-core machine, half the speed.
if hasattr(os, 'sched_getaffinity'):
    os.environ.setdefault('OMP_NUM_THREADS', str(len(os.sched_getaffinity(0))))

from . import compat  # noqa: E402,F401  (numpy aliases MXNet needs: before mxnet)

# The modules whose public names are d2lfcn's own, in this order.
_LIBRARY = ('utils', 'segmaps', 'conv', 'model', 'voc', 'maskfolder', 'segdata',
            'synthetic', 'metrics', 'inference', 'loop', 'runfolder', 'job', 'plotting',
            'deploy', 'runtime', 'drawings', 'classifier', 'book.patches', 'book.standin',
            'book.display', 'book.glue')
_loaded = False


def _mxnet_message(error):
    """Say in one line why MXNet cannot be used."""
    if isinstance(error, ModuleNotFoundError) and error.name == 'mxnet':
        return ("d2lfcn needs MXNet: pip install 'd2lfcn[cpu]' "
                "(or 'd2lfcn[cu112]' on a CUDA 11.2 machine)")
    from .utils import first_line  # no MXNet: utils imports it only where devices are used
    return first_line(error)


def _load():
    """Import the library (and MXNet) and give d2lfcn its public names."""
    global _loaded
    if _loaded:
        return
    try:
        import mxnet  # noqa: F401
    except Exception as e:  # ImportError, or e.g. OSError for a missing libgomp
        raise ImportError(_mxnet_message(e)) from None
    for name in _LIBRARY:
        module = importlib.import_module(f'{__name__}.{name}')
        globals().update((n, getattr(module, n)) for n in module.__all__)
    _loaded = True


def __getattr__(name):
    if name.startswith('__'):
        raise AttributeError(name)
    # A submodule (`from d2lfcn import segmaps`) loads alone, the rest with the library.
    if importlib.util.find_spec(f'{__name__}.{name}') is not None:
        return importlib.import_module(f'{__name__}.{name}')
    _load()
    try:
        return globals()[name]
    except KeyError:
        raise AttributeError(f"module 'd2lfcn' has no attribute {name!r}") from None


def __dir__():
    _load()
    return sorted(globals())


def _one_line_if_mxnet_fails(kind, error, tb):
    """End a command whose MXNet cannot be imported with one line and exit 2."""
    files = [frame.filename for frame in traceback.extract_tb(tb)]
    in_mxnet = (isinstance(error, ModuleNotFoundError) and error.name == 'mxnet') or (
        any(f'{os.sep}mxnet{os.sep}' in f for f in files)
        and any(f.startswith('<frozen importlib') for f in files))
    if isinstance(error, (ImportError, OSError)) and in_mxnet:
        sys.stderr.write(f'error: {_mxnet_message(error)}\n')
        sys.stderr.flush()
        os._exit(2)
    _previous_hook(kind, error, tb)


if os.environ.get('DMLC_ROLE') in ('scheduler', 'server'):
    # MXNet's parameter server: importing mxnet as a scheduler or server runs
    # that node until the workers are done (README: python -c 'import d2lfcn').
    import mxnet  # noqa: E402,F401

if sys.argv and sys.argv[0] == '-m':  # a command: python -m d2lfcn.train, ...
    _previous_hook, sys.excepthook = sys.excepthook, _one_line_if_mxnet_fails
