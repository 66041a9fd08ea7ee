"""Test multi-machine training: a scheduler, a server and two workers on 127.0.0.1."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest
from mxnet import gluon, nd
from mxnet.gluon import nn

from d2lfcn.model import bilinear_kernel, get_fcn

TIMEOUT = 180  # seconds for the whole cluster; a hung parameter server fails the test
NUM_WORKERS = 2
# 8 training images (all at least 64 px a side, so none is dropped by the crop)
# split into 2 shards of 4 = 2 batches of 2 per worker; 4 validation images.
DIST_VOC = dict(num_train=8, num_val=4, min_size=64, max_size=96, small_size=64,
                small_fraction=0.0, seed=3)
WORKER_ARGS = ['--kvstore', 'dist_sync', '--num-epochs', '1', '--no-pretrained-base',
               '--crop-size', '64', '64', '--batch-size', '2', '--num-workers', '0']
WORKERS = [f'worker{r}' for r in range(NUM_WORKERS)]


@pytest.fixture(scope='module')
def dist_voc_dir(tmp_path_factory):
    from d2lfcn.synthetic import make_synthetic_voc
    return make_synthetic_voc(str(tmp_path_factory.mktemp('dist-voc')), **DIST_VOC)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dmlc_env(port):
    env = dict(os.environ, OMP_NUM_THREADS='1', DMLC_PS_ROOT_URI='127.0.0.1',
               DMLC_PS_ROOT_PORT=str(port), DMLC_NUM_SERVER='1',
               DMLC_NUM_WORKER=str(NUM_WORKERS), DMLC_NODE_HOST='127.0.0.1')
    env.pop('DMLC_ROLE', None)
    return env


class _Cluster:
    """Processes in their own process groups, all killed on exit, even on failure."""

    def __init__(self, log_dir):
        self.log_dir, self.procs = log_dir, {}

    def start(self, name, argv, env):
        log = open(os.path.join(self.log_dir, f'{name}.log'), 'w')
        with log:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.log_dir, start_new_session=True)

    def wait(self, names, timeout):
        """Return the exit codes of processes `names`; fail the test after `timeout` s."""
        deadline = time.monotonic() + timeout
        for name in names:
            try:
                self.procs[name].wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pytest.fail(f'{name} still running after {timeout} s:\n{self.log(name)}')
        return {name: self.procs[name].returncode for name in names}

    def log(self, name):
        with open(os.path.join(self.log_dir, f'{name}.log')) as f:
            return f.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _train_on_cluster(root, voc_dir, out, extra_args=(), servers_end=True):
    """Run a scheduler, a server and the workers; return (exit codes, logs).

    With `servers_end`, wait for the scheduler and server too: they stop on
    their own once every worker has left MXNet in an orderly way.
    """
    env = _dmlc_env(_free_port())
    with _Cluster(str(root)) as cluster:
        # Importing mxnet with DMLC_ROLE=scheduler or server runs that node's loop;
        # through d2lfcn, which lets MXNet import on numpy 1.24+ (README).
        for role in ('scheduler', 'server'):
            cluster.start(role, [sys.executable, '-c', 'import d2lfcn'],
                          dict(env, DMLC_ROLE=role))
        for name in WORKERS:
            cluster.start(name, [sys.executable, '-m', 'd2lfcn.train', '--data-dir', voc_dir,
                                 '--out-dir', out, *WORKER_ARGS, *extra_args],
                          dict(env, DMLC_ROLE='worker'))
        names = list(cluster.procs) if servers_end else WORKERS
        codes = cluster.wait(names, TIMEOUT)
        return codes, {name: cluster.log(name) for name in cluster.procs}


@pytest.fixture(scope='module')
def dist_run(dist_voc_dir, tmp_path_factory):
    """Train one epoch with two workers; return (out_dir, logs, seconds)."""
    root = tmp_path_factory.mktemp('dist-run')
    out = str(root / 'out')
    tic = time.monotonic()
    codes, logs = _train_on_cluster(root, dist_voc_dir, out)
    seconds = time.monotonic() - tic
    assert codes == dict.fromkeys(codes, 0), logs
    print(f'distributed run: {seconds:.1f} s')  # shown with pytest -s
    return out, logs, seconds


def _params(path):
    return {k: v.asnumpy() for k, v in nd.load(path).items()}


@pytest.mark.slow
def test_workers_end_with_identical_parameters(dist_run):
    out, _, _ = dist_run
    workers = [_params(os.path.join(out, f'worker-{r}', 'last.params'))
               for r in range(NUM_WORKERS)]
    chief = _params(os.path.join(out, 'last.params'))
    assert set(workers[0]) == set(workers[1]) == set(chief)
    assert any('running_var' in k for k in chief)
    for k in chief:
        # Gradients are summed by the server and BatchNorm statistics averaged:
        # the same numbers on both workers, bit for bit.
        assert np.array_equal(workers[0][k], workers[1][k]), k
        assert np.array_equal(workers[0][k], chief[k]), k
    # The epoch did train: the bilinear upsampling moved, statistics left 0 and 1.
    start = bilinear_kernel(21, 21, 64).asnumpy()
    assert not np.allclose(chief['upsample.weight'], start)
    assert np.abs(chief['features.0.running_mean']).max() > 0


@pytest.mark.slow
def test_workers_together_see_each_training_image_once(dist_run, dist_voc_dir):
    out, _, _ = dist_run
    with open(os.path.join(dist_voc_dir, 'ImageSets', 'Segmentation', 'train.txt')) as f:
        names = f.read().split()
    seen = []
    for r in range(NUM_WORKERS):
        with open(os.path.join(out, f'worker-{r}', 'examples.json')) as f:
            epochs = json.load(f)
        assert list(epochs) == ['1']
        assert len(epochs['1']) == len(names) // NUM_WORKERS  # equal steps
        seen += epochs['1']
    assert sorted(seen) == sorted(names)


@pytest.mark.slow
def test_rank_zero_writes_the_run_and_scores_the_whole_validation_set(dist_run,
                                                                      dist_voc_dir):
    out, logs, _ = dist_run
    assert sorted(os.listdir(out)) == sorted([
        'args.json', 'state.json', 'last.params', 'last.states', 'best.params',
        'metrics.csv', 'curves.png', 'predictions.png', 'classes.json', 'worker-0', 'worker-1',
        'checkpoints'])
    for r in range(NUM_WORKERS):
        assert sorted(os.listdir(os.path.join(out, f'worker-{r}'))) == [
            'examples.json', 'last.params']
    with open(os.path.join(out, 'args.json')) as f:
        args = json.load(f)
    assert (args['kvstore'], args['dist_workers'], args['batch_size']) == ('dist_sync', 2, 2)
    # Each worker scores half the validation set; the counts are summed, so
    # the score is that of the saved network on every validation crop.
    from d2lfcn.voc import VOCSegDataset
    net = get_fcn(pretrained_base=False)
    net.load_parameters(os.path.join(out, 'last.params'))
    correct = labelled = 0
    for X, y in VOCSegDataset(False, (64, 64), dist_voc_dir):
        pred = net(X.expand_dims(0))[0].asnumpy().argmax(axis=0)
        y = y.asnumpy()
        correct += ((pred == y) & (y != 255)).sum()
        labelled += (y != 255).sum()
    with open(os.path.join(out, 'metrics.csv')) as f:
        row, = list(csv.DictReader(f))
    assert float(row['test_acc']) == pytest.approx(correct / labelled, abs=1e-6)
    # ... and both workers print that same score, and the same whole-image scores.
    test_acc = f"test acc {float(row['test_acc']):.3f}, test mIoU"
    whole = f"whole images: pixel acc {float(row['whole_acc']):.3f}, mean acc"
    assert all(test_acc in logs[f'worker{r}'] and whole in logs[f'worker{r}']
               for r in range(NUM_WORKERS))


@pytest.mark.parametrize('role, kvstore, message', [
    (None, 'dist_sync', '--kvstore dist_sync: DMLC_ROLE, DMLC_PS_ROOT_URI'),
    ('worker', 'device', '--kvstore device: DMLC_ROLE=worker is set'),
])
def test_kvstore_without_its_environment_is_one_line(role, kvstore, message, dist_voc_dir,
                                                     tmp_path):
    """No scheduler to wait for: a clear line, exit 2, nothing written, no hang."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('DMLC_')}
    if role:
        env['DMLC_ROLE'] = role
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, '-m', 'd2lfcn.train', '--data-dir', dist_voc_dir,
                           '--out-dir', str(out), '--kvstore', kvstore],
                          capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS='1'),
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: ' + message) and proc.stderr.count('\n') == 1
    assert not out.exists()


@pytest.mark.slow
def test_an_error_every_worker_meets_ends_the_whole_cluster(dist_voc_dir, tmp_path):
    """Too large a batch for the shards: each worker says so, and nothing waits on."""
    codes, logs = _train_on_cluster(tmp_path, dist_voc_dir, str(tmp_path / 'out'),
                                    ['--batch-size', '8'])
    assert codes == dict(scheduler=0, server=0, worker0=2, worker1=2), logs
    for name in WORKERS:
        assert logs[name].endswith('error: --batch-size 8: more than the 4 training '
                                   'images for each of 2 workers; use a smaller one\n')


@pytest.mark.slow
def test_diverging_workers_stop_with_one_line(dist_voc_dir, tmp_path):
    """A NaN loss may show on workers a step apart: each leaves at once, exit 2."""
    out = tmp_path / 'out'
    codes, logs = _train_on_cluster(tmp_path, dist_voc_dir, str(out),
                                    ['--lr', '1e30', '--num-epochs', '2'], servers_end=False)
    assert codes == dict(worker0=2, worker1=2), logs
    for name in WORKERS:
        last = logs[name].splitlines()[-1]
        assert last.startswith('error: the loss became') and 'try a smaller --lr' in last
    assert not (out / 'state.json').exists()


# --- the plug-in itself, in this process, on MXNet's local kvstore -------------

class _Batches:
    served = [2, 0]  # dataset indices a ShardBatchSampler handed out this epoch


def test_workers_plug_in_sums_averages_and_records_through_the_callbacks(tmp_path):
    from d2lfcn.distributed import OneMachine, Workers, placement
    assert type(placement('device')) is OneMachine
    workers = Workers('dist_sync')
    workers.kv = mx.kv.create('local')  # a cluster of one, with the same calls
    workers.rank, workers.num_workers = 1, 2
    workers._dir = str(tmp_path / 'worker-1')
    # Rank 1 shuffles with its own stream and scores every second image only.
    assert workers.seed(0) != 0 and OneMachine().seed(0) == 0
    assert list(workers.shard(gluon.data.SimpleDataset(list(range(5))))) == [3, 4]
    conf = np.arange(9).reshape(3, 3)
    np.testing.assert_array_equal(workers.reduce(conf), conf)  # one worker: its own sum
    assert workers.reduce(conf).dtype == np.int64
    # BatchNorm statistics: the mean over devices (and workers), for every copy.
    net = nn.BatchNorm(in_channels=2)
    net.initialize(ctx=[mx.cpu(0), mx.cpu(1)])
    net.running_mean.list_data()[0][:] = nd.array([1.0, 3.0])
    net.running_mean.list_data()[1][:] = nd.array([3.0, 5.0])
    workers.on_epoch_trained(net)
    for copy in net.running_mean.list_data():
        # Summed over the one real worker and divided by the two it was told of.
        np.testing.assert_allclose(copy.asnumpy(), [1.0, 2.0])
    from d2lfcn.segdata import SegDataset
    files = [(f'/data/JPEGImages/img{i}.jpg', f'/data/labels/img{i}.png', 9, 9)
             for i in range(3)]
    workers.watch(net, SegDataset(files, True, None, None, ['bg', 'x']), _Batches(), 0)
    workers.on_epoch_end({'epoch': 1})
    with open(tmp_path / 'worker-1' / 'examples.json') as f:
        assert json.load(f) == {'1': ['img2', 'img0']}
    saved = nd.load(str(tmp_path / 'worker-1' / 'last.params'))
    np.testing.assert_allclose(saved['running_mean'].asnumpy(), [1.0, 2.0])
