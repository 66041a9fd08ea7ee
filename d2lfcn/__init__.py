"""d2lfcn: Fully Convolutional Networks, Dive-into-Deep-Learning style.

The book-facing API is re-exported here, like `d2l.xxx`: library modules
only. The commands (`python -m d2lfcn.train`, `predict`, `export`, `figures`,
`notebooks`) are modules of their own, imported when run. See chapters/index.md.
"""
import os
import sys

__version__ = '0.1.0'

# MXNet reads OMP_NUM_THREADS once, at import, and without it uses half the
# cores (it assumes hyper-threading): on a 2-core machine, half the speed.
if hasattr(os, 'sched_getaffinity'):
    os.environ.setdefault('OMP_NUM_THREADS', str(len(os.sched_getaffinity(0))))

try:
    from . import compat  # noqa: F401  (numpy aliases MXNet needs: before mxnet)
    import mxnet  # noqa: F401
except Exception as e:  # ImportError, or e.g. OSError for a missing libgomp
    if isinstance(e, ModuleNotFoundError) and e.name == 'mxnet':
        _MSG = ("d2lfcn needs MXNet: pip install 'd2lfcn[cpu]' "
                "(or 'd2lfcn[cu112]' on a CUDA 11.2 machine)")
    else:
        _MSG = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if sys.argv and sys.argv[0] == '-m':
        # Running a d2lfcn command (`python -m d2lfcn.train`): one line, exit 2.
        sys.stderr.write('error: ' + _MSG + '\n')
        raise SystemExit(2)
    raise ImportError(_MSG) from None

from .utils import *       # noqa: E402,F401,F403
from .conv import *        # noqa: E402,F401,F403
from .model import *       # noqa: E402,F401,F403
from .voc import *         # noqa: E402,F401,F403
from .synthetic import *   # noqa: E402,F401,F403
from .metrics import *     # noqa: E402,F401,F403
from .inference import *   # noqa: E402,F401,F403
from .loop import *        # noqa: E402,F401,F403
from .runfolder import *   # noqa: E402,F401,F403
from .job import *         # noqa: E402,F401,F403
from .plotting import *    # noqa: E402,F401,F403
from .drawings import *    # noqa: E402,F401,F403
from .classifier import *  # noqa: E402,F401,F403
from .book.patches import *  # noqa: E402,F401,F403
from .book.standin import *  # noqa: E402,F401,F403
from .book.display import *  # noqa: E402,F401,F403
from .book.glue import *     # noqa: E402,F401,F403
