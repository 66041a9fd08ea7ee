"""d2lfcn: Fully Convolutional Networks, Dive-into-Deep-Learning style.

The book-facing API is re-exported here, like `d2l.xxx`. See chapters/index.md.
"""
import os
import sys
import warnings

__version__ = '0.1.0'

# MXNet reads OMP_NUM_THREADS once, at import, and without it uses half the
# cores (it assumes hyper-threading): on a 2-core machine, half the speed.
if hasattr(os, 'sched_getaffinity'):
    os.environ.setdefault('OMP_NUM_THREADS', str(len(os.sched_getaffinity(0))))

try:
    import mxnet  # noqa: F401
except ImportError:
    _MSG = ("d2lfcn needs MXNet: pip install 'd2lfcn[cpu]' "
            "(or 'd2lfcn[cu112]' on a CUDA 11.2 machine)")
    if sys.argv and sys.argv[0] == '-m':
        # Running a d2lfcn command (`python -m d2lfcn.train`): one line, exit 2.
        sys.stderr.write('error: ' + _MSG + '\n')
        raise SystemExit(2)
    raise ImportError(_MSG) from None

# The commands live in re-exported modules, so `python -m d2lfcn.train` finds
# d2lfcn.train imported already and runpy warns; running it that way is safe.
warnings.filterwarnings('ignore', category=RuntimeWarning,
                        message=r"'d2lfcn\.\w+' found in sys\.modules")

from .utils import *      # noqa: E402,F401,F403
from .conv import *       # noqa: E402,F401,F403
from .model import *      # noqa: E402,F401,F403
from .voc import *        # noqa: E402,F401,F403
from .synthetic import *  # noqa: E402,F401,F403
from .metrics import *    # noqa: E402,F401,F403
from .predict import *    # noqa: E402,F401,F403
from .figures import *    # noqa: E402,F401,F403
from .train import *      # noqa: E402,F401,F403
from .diagrams import *    # noqa: E402,F401,F403
from .classifier import *  # noqa: E402,F401,F403
from .display import *     # noqa: E402,F401,F403
