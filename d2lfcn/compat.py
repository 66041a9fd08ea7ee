"""Let MXNet 1.9.1 import on numpy 1.24-1.26 by restoring the aliases numpy removed.

d2lfcn imports this module before `mxnet`. A script that imports `mxnet`
before `d2lfcn` on numpy 1.24 or newer gets MXNet's own AttributeError
(`module 'numpy' has no attribute 'bool'`): import d2lfcn first.
Explained in README.md (Python and numpy versions).
"""
import builtins

import numpy as np
from numpy.lib import NumpyVersion

__all__ = ['REMOVED_ALIASES', 'restore_removed_aliases']

# numpy 1.24 removed these aliases of Python's types (deprecated since 1.20).
# MXNet 1.9.1 reads np.bool at import (mxnet/numpy/utils.py) and np.int in
# its test utilities; gluoncv 0.10.5 uses np.float and np.int (anchors, COCO
# metric). We restore the whole removed set, so every numpy that MXNet
# accepts looks like numpy 1.23 did.
REMOVED_ALIASES = ('bool', 'object', 'int', 'float', 'str', 'complex')


def restore_removed_aliases(numpy_module=np):
    """Give numpy 1.24-1.26 back `np.bool` and the other removed aliases; refuse numpy 2."""
    version = NumpyVersion(numpy_module.__version__)
    if version >= '2.0.0':
        # numpy 2 removed much more (np.PZERO, ...) and redefined np.bool.
        raise ImportError(f'MXNet 1.9.1 needs numpy<2, found numpy '
                          f"{numpy_module.__version__}: pip install 'numpy<2'")
    if version < '1.24.0':
        return  # the aliases are still there (deprecated): change nothing
    for name in REMOVED_ALIASES:
        if name not in vars(numpy_module):  # never replace what numpy defines
            setattr(numpy_module, name, getattr(builtins, name))


restore_removed_aliases()
