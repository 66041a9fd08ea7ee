"""Take part in a training job alone, or as one of several parameter-server workers.

`fit` asks `placement(kvstore)` how this process takes part and calls the
answer at fixed points of the job; it is also one of the loop's callbacks.
`OneMachine` does the plain thing everywhere. `Workers` shards the data,
sums gradients and scores through MXNet's kvstore, averages BatchNorm's
statistics, records what each worker saw, and ends every worker at once on
an error. Explained in chapters/training-at-scale.md and README.md
(Training on several machines).
"""
import contextlib
import json
import os
import sys

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from .loop import Callback
from .runfolder import FILES, interrupts_deferred
from .utils import Arg, Terminated, UserError, atomic_path, exit_line

__all__ = ['DMLC_ENV', 'check_kvstore_env', 'placement', 'OneMachine', 'Workers',
           'abandon']


# MXNet's parameter server reads its topology from these (see README).
DMLC_ENV = ['DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_PS_ROOT_PORT', 'DMLC_NUM_SERVER',
            'DMLC_NUM_WORKER']


def _is_distributed(kvstore):
    return kvstore.startswith('dist')


def check_kvstore_env(kvstore):
    """Refuse a distributed kvstore outside a worker process, and vice versa.

    MXNet would wait forever for a scheduler that was never started.
    """
    role = os.environ.get('DMLC_ROLE')
    arg = Arg('kvstore', kvstore)
    if not _is_distributed(kvstore):
        if role == 'worker':
            raise UserError('{arg}: DMLC_ROLE=worker is set, so the scheduler waits '
                            'for this process; pass {dist}, or unset DMLC_ROLE to '
                            'train alone', arg=arg, dist=Arg('kvstore', 'dist_sync'))
        return
    missing = [name for name in DMLC_ENV if not os.environ.get(name)]
    if missing or role != 'worker':
        what = f"{', '.join(missing)} not set" if missing else f'DMLC_ROLE is {role}'
        raise UserError(f'{{arg}}: {what}; start each worker with DMLC_ROLE=worker, '
                        'DMLC_PS_ROOT_URI, DMLC_PS_ROOT_PORT, DMLC_NUM_SERVER and '
                        'DMLC_NUM_WORKER (see README), or use {local}',
                        arg=arg, local=Arg('kvstore', 'device'))


def placement(kvstore):
    """Return how this process takes part in a job that combines gradients by `kvstore`."""
    check_kvstore_env(kvstore)
    return Workers(kvstore) if _is_distributed(kvstore) else OneMachine(kvstore)


class OneMachine(Callback):
    """Take part in a training job as its only process, on one machine's devices."""

    rank, num_workers = 0, 1

    def __init__(self, kvstore='device'):
        self.kvstore = kvstore

    def claim(self, folder):
        """Take the run folder before anything is read from it."""
        folder.lock()

    def join(self, folder):
        """Meet the other workers; return the run folder this process writes."""
        return folder

    def seed(self, seed):
        """Return this process's seed for shuffling and cropping."""
        return seed

    def shard(self, dataset):
        """Return this process's share of `dataset`."""
        return dataset

    def make_trainer(self, params, hyper):
        """Return SGD over `params` with the optimizer settings `hyper`."""
        return gluon.Trainer(params, 'sgd', hyper, kvstore=self.kvstore)

    def share_parameters(self, net, trainer, x):
        """Give every process the same starting parameters (one process has them)."""

    def watch(self, net, train_set, batches, start_epoch):
        """Note what the epoch-end callbacks record about this process's epochs."""

    @contextlib.contextmanager
    def abandon_on_error(self):
        """Run the block; an error ends this process only (there is no other)."""
        yield


class Workers(OneMachine):
    """Take part in a training job as one of several parameter-server workers.

    Each worker trains on its shard of the data with the same number of
    steps; the servers add up the gradients, and every worker applies the
    same update. Rank 0 writes the run folder; every worker also writes
    worker-RANK/last.params and worker-RANK/examples.json.
    """

    _FIRST_KEY = 1 << 30  # clear of the Trainer's keys 0, 1, ... (one per parameter)

    def __init__(self, kvstore):
        super().__init__(kvstore)
        self.kv, self._keys = None, {}
        self._seen, self._watched = {}, None

    def claim(self, folder):
        """Take nothing yet: only rank 0 keeps the folder, and ranks come with join."""

    def join(self, folder):
        """Create the distributed kvstore (this blocks until every node is up)."""
        self.kv = mx.kv.create(self.kvstore)
        self.rank, self.num_workers = self.kv.rank, self.kv.num_workers
        self._dir = os.path.join(folder.out_dir, f'worker-{self.rank}')
        if self.rank != 0:
            return _Unkept(folder.out_dir)
        folder.num_workers = self.num_workers
        folder.lock()
        return folder

    def seed(self, seed):
        # Each worker shuffles and crops its shard with its own random stream;
        # rank 0's is the single-machine run's.
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def shard(self, dataset):
        return dataset.shard(self.num_workers, self.rank)

    def make_trainer(self, params, hyper):
        # The servers add up the workers' gradients and each worker applies the
        # same update itself: updating on the servers would keep the optimizer
        # there, out of reach of set_learning_rate and save_states. Scaling by
        # 1/workers makes each update the mean over all the workers' examples.
        hyper = dict(hyper, rescale_grad=1 / self.num_workers)
        return gluon.Trainer(params, 'sgd', hyper, kvstore=self.kv,
                             update_on_kvstore=False)

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

    def watch(self, net, train_set, batches, start_epoch):
        self._watched = (net, train_set, batches)
        self._seen = _read_seen(self._dir, start_epoch) if start_epoch else {}

    def _allreduce(self, name, array):
        """Return the float64 sum of `array` over all workers; all must call it."""
        value = nd.array(array, dtype='float64')
        if name not in self._keys:
            self._keys[name] = self._FIRST_KEY + len(self._keys)
            self.kv.init(self._keys[name], nd.zeros_like(value))
        self.kv.pushpull(self._keys[name], value, out=value)
        return value.asnumpy()

    def reduce(self, conf):
        """Return the sum of every worker's confusion matrix (exact in float64)."""
        return np.rint(self._allreduce('counts', conf)).astype(np.int64)

    def on_epoch_trained(self, net):
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

    def on_epoch_end(self, record):
        """Save this worker's weights and the names of the images it trained on."""
        net, train_set, batches = self._watched
        self._seen[str(record['epoch'])] = train_set.names(batches.served)
        with interrupts_deferred():
            os.makedirs(self._dir, exist_ok=True)
            with atomic_path(os.path.join(self._dir, FILES['last'])) as tmp:
                net.save_parameters(tmp)
            with atomic_path(os.path.join(self._dir, FILES['examples'])) as tmp:
                with open(tmp, 'w') as f:
                    json.dump(self._seen, f)

    @contextlib.contextmanager
    def abandon_on_error(self):
        """Run the block; an error that stops this worker stops it at once.

        Other workers may notice a step later, or never: MXNet's orderly exit
        would wait for them at a barrier forever.
        """
        try:
            yield
        except (UserError, KeyboardInterrupt, Terminated) as e:
            abandon(*exit_line(e))


class _Unkept:
    """The run folder as a worker other than rank 0 sees it: rank 0 writes it."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def save_epoch(self, *args):
        pass

    def write_figure(self, key, fig):
        pass


def _read_seen(worker_dir, epochs):
    """Return the first `epochs` epochs of a worker's examples.json, or {}."""
    try:
        with open(os.path.join(worker_dir, FILES['examples'])) as f:
            seen = json.load(f)
        return {k: v for k, v in seen.items() if int(k) <= epochs}
    except (OSError, ValueError, AttributeError):
        return {}


def abandon(message, code):
    """Leave a distributed run at once, with `message` as the only line.

    Other workers may be waiting for this one's next gradients; MXNet's
    orderly exit waits for all workers at a barrier, so it would never end.
    """
    sys.stdout.flush()
    sys.stderr.write(message + '\n')
    sys.stderr.flush()
    os._exit(code)
