"""Train on several machines: the parameter server's workers and their shared sums.

Explained in chapters/training-at-scale.md and README.md (Training on several machines).
"""
import os
import sys

import mxnet as mx
import numpy as np
from mxnet import autograd, nd

from .utils import UserError

__all__ = ['DMLC_ENV', 'check_kvstore_env', 'Workers', 'join_workers', 'abandon']


# MXNet's parameter server reads its topology from these (see README).
DMLC_ENV = ['DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
             'DMLC_NUM_WORKER']


def check_kvstore_env(kvstore):
    """Refuse a distributed --kvstore outside a worker process, and vice versa.

    MXNet would wait forever for a scheduler that was never started.
    """
    role = os.environ.get('DMLC_ROLE')
    if not kvstore.startswith('dist'):
        if role == 'worker':
            raise UserError(f'--kvstore {kvstore}: DMLC_ROLE=worker is set, so '
                            'the scheduler waits for this process; pass --kvstore '
                            'dist_sync, or unset DMLC_ROLE to train alone')
        return
    missing = [name for name in DMLC_ENV if not os.environ.get(name)]
    if missing or role != 'worker':
        what = f"{', '.join(missing)} not set" if missing else f'DMLC_ROLE is {role}'
        raise UserError(f'--kvstore {kvstore}: {what}; start each worker with '
                        'DMLC_ROLE=worker, DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, '
                        'DMLC_NUM_SERVER and DMLC_NUM_WORKER (see README), or use '
                        '--kvstore device')


class Workers:
    """The workers of a distributed run: rank, count, and sums through the kvstore."""

    _FIRST_KEY = 1 << 30  # clear of the Trainer's keys 0, 1, ... (one per parameter)

    def __init__(self, kv):
        self.kv, self.rank, self.num_workers = kv, kv.rank, kv.num_workers
        self._keys = {}

    def _allreduce(self, name, array):
        """Return the float64 sum of `array` over all workers; all must call it."""
        value = nd.array(array, dtype='float64')
        if name not in self._keys:
            self._keys[name] = self._FIRST_KEY + len(self._keys)
            self.kv.init(self._keys[name], nd.zeros_like(value))
        self.kv.pushpull(self._keys[name], value, out=value)
        return value.asnumpy()

    def share_parameters(self, net, trainer, x):
        """Give every worker rank 0's parameters before the first step.

        The Trainer broadcasts them itself at its first step, but MXNet 1.9
        does not order the pulls of that broadcast before the first gradient
        sums, which go to the same kvstore keys: a worker may then start from
        a gradient sum instead of weights. So broadcast now, and wait.
        """
        # Parameters whose shapes depend on the input exist after a forward
        # pass. In training mode: an inference pass lets oneDNN keep weights
        # in its own layout, which the kvstore cannot send; and BatchNorm
        # changes its running statistics only in backward, so nothing moves.
        with autograd.train_mode():
            net(x)
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        if trainer._params_to_init:
            trainer._init_params()
        nd.waitall()

    def sum_counts(self, conf):
        """Return the sum of every worker's confusion matrix (exact in float64)."""
        return np.rint(self._allreduce('counts', conf)).astype(np.int64)

    def average_aux(self, net):
        """Set BatchNorm's running statistics to their mean over workers and devices.

        The kvstore combines gradients only; running means and variances are
        updated in each worker's forward pass from its own batches, so
        workers' copies drift apart. Averaging them once per epoch (before
        evaluation and checkpoints) gives every worker identical parameters
        and statistics of all the data, as plain data parallelism would
        (the mean of per-worker variances leaves out the spread between
        workers' means: small for shards of one shuffled dataset).
        """
        aux = [p for p in net.collect_params().values() if p.grad_req == 'null']
        local = [np.mean([d.asnumpy() for d in p.list_data()], axis=0) for p in aux]
        flat = self._allreduce('aux', np.concatenate([a.ravel() for a in local]))
        flat /= self.num_workers
        for p, a in zip(aux, local):
            p.set_data(nd.array(flat[:a.size].reshape(a.shape), dtype=p.dtype))
            flat = flat[a.size:]


def join_workers(kvstore):
    """Create the distributed kvstore (this blocks until every node is up)."""
    if not kvstore.startswith('dist'):
        return None
    return Workers(mx.kv.create(kvstore))


def abandon(message, code):
    """Leave a distributed run at once, with `message` as the only line.

    Other workers may be waiting for this one's next gradients; MXNet's
    orderly exit waits for all workers at a barrier, so it would never end.
    """
    sys.stdout.flush()
    sys.stderr.write(message + '\n')
    sys.stderr.flush()
    os._exit(code)
