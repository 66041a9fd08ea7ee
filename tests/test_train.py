"""Test the training loop and `python -m d2lfcn.train` on tiny embedded datasets."""
import csv
import json
import math
import os
import random
import re
import socket
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, init, nd
from PIL import Image

from d2lfcn.cli import run_cli
from d2lfcn.loop import (LossAndAccuracy, SegmentationLoss, evaluate_segmentation,
                         hybridize_for_training, lr_at, pixel_accuracy, set_epoch_seed,
                         split_batch, train_batch)
from d2lfcn.model import get_fcn
from d2lfcn.segmaps import voc_palette
from d2lfcn.voc import VOC_CLASSES
from d2lfcn.train import main

# Tiny runs: 64x64 crops of the conftest's 12 + 8 image set, batches of 4.
TINY = ['--no-pretrained-base', '--crop-size', '64', '64', '--batch-size', '4',
        '--num-workers', '0']
# Momentum and a schedule, so that resuming must restore trainer states and
# the position in the schedule.
SCHEDULED = ['--momentum', '0.9', '--lr-schedule', 'poly', '--warmup-epochs', '0.5']

EPOCH_LINE = re.compile(r'^epoch (\d+): loss (\d+\.\d{3}), train acc (\d\.\d{3}), '
                        r'test acc (\d\.\d{3}), test mIoU (\d\.\d{3})$', re.M)


def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_loss_equals_gluon_softmax_cross_entropy_without_void():
    """D2L's loss is SoftmaxCrossEntropyLoss(axis=1); ours agrees with no void."""
    pred = nd.random.normal(shape=(3, 21, 8, 6))
    label = nd.random.randint(0, 21, shape=(3, 8, 6)).astype('float32')
    ours = SegmentationLoss()(pred, label).asnumpy()
    d2l = gluon.loss.SoftmaxCrossEntropyLoss(axis=1)(pred, label).asnumpy()
    np.testing.assert_allclose(ours, d2l, rtol=1e-5)


def test_loss_averages_over_non_void_pixels_per_example():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 5, 4, 4)).astype(np.float32)
    label = rng.integers(0, 5, size=(3, 4, 4)).astype(np.float32)
    label[0, :2] = 255      # half void
    label[2] = 255          # all void: contributes 0, not NaN
    logp = _log_softmax(pred, axis=1)
    expected = []
    for n in range(3):
        valid = label[n] != 255
        terms = [-logp[n, int(label[n, i, j]), i, j] for i, j in zip(*np.nonzero(valid))]
        expected.append(np.mean(terms) if terms else 0.0)
    P = nd.array(pred)
    P.attach_grad()
    with autograd.record():
        loss = SegmentationLoss()(P, nd.array(label))
    loss.backward()
    np.testing.assert_allclose(loss.asnumpy(), expected, rtol=1e-5)
    grad = P.grad.asnumpy()
    assert np.isfinite(grad).all()
    assert np.abs(grad[2]).max() == 0           # void pixels get no gradient
    assert np.abs(grad[0][:, :2]).max() == 0


def test_loss_hybridizes():
    loss = SegmentationLoss()
    loss.hybridize()
    pred = nd.random.normal(shape=(2, 4, 3, 3))
    label = nd.array([[[0, 1, 255]] * 3, [[3, 3, 2]] * 3])
    np.testing.assert_allclose(loss(pred, label).asnumpy(),
                               SegmentationLoss()(pred, label).asnumpy(), rtol=1e-6)


def test_pixel_accuracy_leaves_out_void():
    # Scores whose argmax is 0, 1, 1, 2 against labels 0, 2, 1, void.
    y_hat = nd.array([[[[5, 0, 0, 0]], [[0, 5, 5, 0]], [[0, 0, 0, 5]]]])  # (1, 3, 1, 4)
    y = nd.array([[[0, 2, 1, 255]]])                                       # (1, 1, 4)
    correct, labelled = pixel_accuracy(y_hat, y)
    assert (correct.asscalar(), labelled.asscalar()) == (2, 3)


def test_lr_schedules():
    assert lr_at(7, 100, 0.1) == 0.1                                 # D2L: constant
    assert lr_at(0, 100, 0.1, 'poly', warmup_steps=10) == pytest.approx(0.01)
    assert lr_at(9, 100, 0.1, 'poly', warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(10, 100, 0.1, 'poly', warmup_steps=10) == pytest.approx(0.1)
    assert lr_at(55, 100, 0.1, 'poly', warmup_steps=10) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert lr_at(50, 100, 0.1, 'cosine') == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, 'cosine') == pytest.approx(0.0)


def test_epoch_seed_fixes_every_generator():
    def draw():
        return (random.random(), np.random.rand(), nd.random.uniform(shape=(1,)).asscalar())
    set_epoch_seed(3, 1)
    first = draw()
    set_epoch_seed(3, 2)
    other = draw()
    set_epoch_seed(3, 1)
    assert draw() == first
    assert all(a != b for a, b in zip(first, other))


def _tiny_net(ctx):
    """A BatchNorm-free segmentation net, so device shards cannot differ."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(8, 3, padding=1, activation='relu'),
            gluon.nn.Conv2D(21, 1))
    net.initialize(init.Xavier(), ctx=ctx)
    return net


def test_train_batch_on_two_cpu_contexts_equals_one():
    """Splitting a batch over devices changes nothing without BatchNorm."""
    X = nd.random.normal(shape=(6, 3, 8, 8))
    y = nd.random.randint(0, 21, shape=(6, 8, 8)).astype('float32')
    y[0, :3] = 255
    results = []
    for devices in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        mx.random.seed(0)
        net = _tiny_net(devices)
        trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.5})
        sums = train_batch(net, X, y, SegmentationLoss(), trainer, devices)
        params = [p.data(mx.cpu(0)).asnumpy() for p in net.collect_params().values()]
        results.append(([s.asscalar() for s in sums], params))
    (sums1, params1), (sums2, params2) = results
    np.testing.assert_allclose(sums1, sums2, rtol=1e-5)
    assert sums1[2] == (y != 255).sum().asscalar()
    for a, b in zip(params1, params2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_train_batch_tracks_the_input_batchnorm():
    """resnet v2's first BatchNorm has no parameters; its statistics must still move."""
    mx.random.seed(0)
    net = get_fcn(pretrained_base=False)
    first = net.features[0]
    assert isinstance(first, gluon.nn.BatchNorm)
    X = nd.random.normal(2, 3, shape=(2, 3, 32, 32))
    y = nd.zeros((2, 32, 32))
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.01})
    train_batch(net, X, y, SegmentationLoss(), trainer, [mx.cpu()])
    # Gluon's default momentum 0.9: running = 0.9 * 0 + 0.1 * batch mean.
    expected = 0.1 * X.asnumpy().mean(axis=(0, 2, 3))
    np.testing.assert_allclose(first.running_mean.data().asnumpy(), expected, rtol=1e-4)


def _train_batches(devices, batches, mode):
    """Train a fresh FCN on `batches`; return (per-batch sums, parameters)."""
    mx.random.seed(0)
    net = get_fcn(pretrained_base=False, ctx=devices)
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.02, 'momentum': 0.9})
    loss = SegmentationLoss()
    if mode == 'd2l hybridized':  # D2L's way: net.hybridize(), then the loss
        net.hybridize()
    if mode in ('fused', 'static'):
        loss = LossAndAccuracy(net, loss)
    if mode == 'static':
        hybridize_for_training(loss, len(devices))
    sums = [[s.asscalar() for s in train_batch(net, X, y, loss, trainer, devices)]
            for X, y in batches]
    nd.waitall()  # as train_ch13 does before anyone reads running statistics
    return sums, [p.data(devices[0]).asnumpy() for p in net.collect_params().values()]


@pytest.mark.slow
@pytest.mark.parametrize('num_devices', [1, 2])
def test_loss_and_accuracy_in_one_static_graph_trains_as_d2ls_loop(num_devices):
    """train_batch through LossAndAccuracy = net, then loss, as D2L's loop does."""
    devices = [mx.cpu(i) for i in range(num_devices)]
    batches = []
    for _ in range(3):
        X = nd.random.normal(shape=(4, 3, 64, 64))
        y = nd.random.randint(0, 21, shape=(4, 64, 64)).astype('float32')
        y[:, :5] = 255
        batches.append((X, y))
    d2l = _train_batches(devices, batches, 'd2l')
    # Imperatively, the same operators in the same order: equal results.
    fused = _train_batches(devices, batches, 'fused')
    assert fused[0] == d2l[0]
    for a, b in zip(d2l[1], fused[1]):
        np.testing.assert_array_equal(b, a)
    # Hybridized, MXNet rounds differently from imperative code (and tiny
    # batches make BatchNorm amplify it): compare with D2L's hybridized net.
    # Every BatchNorm's running statistics must have moved as there (with
    # static_shape=True on several devices, MXNet 1.9 loses the first step's
    # update: hybridize_for_training leaves static_shape out there).
    d2l, static = (_train_batches(devices, batches[:2], mode)
                   for mode in ('d2l hybridized', 'static'))
    for a, b in zip(d2l[0], static[0]):
        assert b[0] == pytest.approx(a[0], rel=1e-5)              # loss sum
        assert abs(b[1] - a[1]) <= 0.001 * a[2]                   # correct pixels
        assert b[2] == a[2] == 4 * 59 * 64                        # void rows left out
    for a, b in zip(d2l[1], static[1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_split_batch_handles_odd_and_tiny_batches():
    X, y = nd.zeros((3, 1, 2, 2)), nd.zeros((3, 2, 2))
    xs, ys = split_batch(X, y, [mx.cpu(0), mx.cpu(1)])
    assert sorted(x.shape[0] for x in xs) == [1, 2] and len(ys) == 2
    xs, _ = split_batch(X[:1], y[:1], [mx.cpu(0), mx.cpu(1)])
    assert len(xs) == 1


def test_evaluation_on_two_cpu_contexts_equals_one(small_voc_dir):
    """Evaluation mode uses running statistics: the split cannot matter."""
    from d2lfcn.voc import VOCSegDataset
    data = gluon.data.DataLoader(VOCSegDataset(False, (64, 64), small_voc_dir), 3,
                                 last_batch='keep')
    mx.random.seed(1)
    net = get_fcn(pretrained_base=False, ctx=[mx.cpu(0), mx.cpu(1)])
    one = evaluate_segmentation(net, data, [mx.cpu(0)])
    two = evaluate_segmentation(net, data, [mx.cpu(0), mx.cpu(1)])
    assert one == two


# --- the command line --------------------------------------------------------

def _run(argv, capsys):
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    try:
        run_cli(main, argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(folder, skip=('args.json',)):
    """Return {relative path: bytes} of every file under `folder`."""
    folder = str(folder)
    return {os.path.relpath(os.path.join(d, f), folder):
            open(os.path.join(d, f), 'rb').read()
            for d, _, files in os.walk(folder) for f in files if f not in skip}


def _read_metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.csv')) as f:
        return list(csv.DictReader(f))


def _png_size(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope='module')
def two_epoch_run(small_voc_dir, tmp_path_factory):
    """A complete 2-epoch run; returns (out_dir, stdout)."""
    out = str(tmp_path_factory.mktemp('run') / 'out')
    capture = _Capture()
    with capture:
        main(['--data-dir', small_voc_dir, '--out-dir', out, '--num-epochs', '2', *TINY,
              *SCHEDULED])
    return out, capture.text


class _Capture:
    """Capture sys.stdout in a module-scoped fixture (capsys is per test)."""

    def __enter__(self):
        import io
        self._old, sys.stdout = sys.stdout, io.StringIO()
        return self

    def __exit__(self, *exc):
        self.text = sys.stdout.getvalue()
        sys.stdout = self._old


def test_run_prints_d2l_lines(two_epoch_run):
    _, text = two_epoch_run
    epochs = EPOCH_LINE.findall(text)
    assert [e[0] for e in epochs] == ['1', '2']
    assert re.search(r'^all-background baseline: test acc \d\.\d{3}, test mIoU \d\.\d{3}\n'
                     r'  whole images: pixel acc \d\.\d{3}, mIoU \d\.\d{3}$', text, re.M)
    assert len(re.findall(r'^  whole images: pixel acc \d\.\d{3}, mean acc \d\.\d{3}, '
                          r'mIoU \d\.\d{3}, fw IoU \d\.\d{3}$', text, re.M)) == 2
    assert re.search(r'^best whole-image mIoU \d\.\d{3} \(epoch [12], baseline '
                     r'\d\.\d{3}\); saved in ', text, re.M)
    last = epochs[-1]
    assert f'loss {last[1]}, train acc {last[2]}, test acc {last[3]}\n' in text
    assert re.search(r'^\d+\.\d examples/sec on \[cpu\(0\)\]$', text, re.M)


def test_run_writes_every_file(two_epoch_run, small_voc_dir):
    out, text = two_epoch_run
    assert sorted(f for f in os.listdir(out)) == sorted([
        'args.json', 'state.json', 'last.params', 'last.states', 'best.params',
        'metrics.csv', 'curves.png', 'predictions.png', 'classes.json', 'checkpoints'])
    with open(os.path.join(out, 'args.json')) as f:
        args = json.load(f)
    assert args['num_epochs'] == 2 and args['crop_size'] == [64, 64]
    assert args['lr'] == 0.1 and args['wd'] == 1e-3   # the book's recipe ...
    assert args['momentum'] == 0.9                     # ... where no flag says otherwise
    assert args['devices'] == ['cpu(0)'] and args['voc_dir'] == small_voc_dir
    with open(os.path.join(out, 'state.json')) as f:
        state = json.load(f)
    rows = _read_metrics(out)
    assert [int(r['epoch']) for r in rows] == [1, 2] == [h['epoch'] for h in state['history']]
    assert state['epoch'] == 2
    for row, printed in zip(rows, EPOCH_LINE.findall(text)):
        assert f"{float(row['loss']):.3f}" == printed[1]
        assert f"{float(row['test_miou']):.3f}" == printed[4]
        for key in ('train_acc', 'test_acc', 'test_miou', 'test_mean_acc', 'test_fw_iou',
                    'whole_acc', 'whole_miou', 'whole_mean_acc', 'whole_fw_iou'):
            assert 0 <= float(row[key]) <= 1
        assert float(row['loss']) > 0 and float(row['seconds']) > 0
    best = max(rows, key=lambda r: float(r['whole_miou']))
    assert state['best_epoch'] == int(best['epoch'])
    # The stable names are the checkpoint files state.json names.
    ckpt = state['checkpoint']
    for name, role in (('last.params', 'params'), ('last.states', 'states'),
                       ('best.params', 'best')):
        assert os.path.samefile(os.path.join(out, name), os.path.join(out, ckpt[role]))
    assert sorted(os.listdir(os.path.join(out, 'checkpoints'))) == sorted(
        {os.path.basename(p) for p in ckpt.values()})
    # D2L's 4 x 3 grid (2 inches a cell at 100 dpi), and half an inch for the legend.
    assert _png_size(os.path.join(out, 'predictions.png')) == (800, 650)
    with open(os.path.join(out, 'classes.json')) as f:
        classes = json.load(f)
    assert classes['names'] == VOC_CLASSES
    assert classes['palette'] == voc_palette()[:21].tolist()
    assert _png_size(os.path.join(out, 'curves.png')) == (350, 250)
    assert not [f for f in os.listdir(out) if f.startswith('.')]  # no temp files


@pytest.mark.slow
def test_static_memory_trains_as_an_unhybridized_network(two_epoch_run, small_voc_dir,
                                                          tmp_path, capsys):
    """The command's static graphs (and the switch to whole images) change no score."""
    out, _ = two_epoch_run
    plain = str(tmp_path / 'plain')
    main(['--data-dir', small_voc_dir, '--out-dir', plain, '--num-epochs', '2', *TINY,
          *SCHEDULED, '--no-hybridize'])
    static, imperative = _read_metrics(out), _read_metrics(plain)
    assert len(static) == len(imperative) == 2
    for a, b in zip(static, imperative):
        for key in ('loss', 'train_acc', 'test_acc', 'test_miou', 'whole_acc', 'whole_miou'):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-3), key


def test_saved_model_reproduces_test_acc(two_epoch_run, small_voc_dir):
    """Score last.params with plain numpy on the validation crops."""
    from d2lfcn.voc import VOCSegDataset
    out, _ = two_epoch_run
    net = get_fcn(pretrained_base=False)
    net.load_parameters(os.path.join(out, 'last.params'))
    correct = labelled = 0
    for X, y in VOCSegDataset(False, (64, 64), small_voc_dir):
        pred = net(X.expand_dims(0))[0].asnumpy().argmax(axis=0)
        y = y.asnumpy()
        correct += ((pred == y) & (y != 255)).sum()
        labelled += (y != 255).sum()
    row = _read_metrics(out)[-1]
    assert float(row['test_acc']) == pytest.approx(correct / labelled, abs=1e-6)


def test_saved_model_reproduces_whole_image_scores(two_epoch_run, small_voc_dir):
    """Score last.params with numpy on every whole validation image, padded by hand."""
    from d2lfcn.metrics import confusion_matrix, segmentation_scores
    from d2lfcn.voc import VOC_COLORMAP, VOC_VOID_COLOR, normalize_image, read_voc_images
    out, _ = two_epoch_run
    net = get_fcn(pretrained_base=False)
    net.load_parameters(os.path.join(out, 'last.params'))
    features, labels = read_voc_images(small_voc_dir, is_train=False)
    conf = np.zeros((21, 21), dtype=np.int64)
    colours = {tuple(c): i for i, c in enumerate(VOC_COLORMAP)}
    colours[tuple(VOC_VOID_COLOR)] = 255
    for img, rgb in zip(features, labels):
        h, w = img.shape[:2]
        x = normalize_image(img).asnumpy()
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        x = np.pad(x, ((0, ph - h), (0, pw - w), (0, 0)), mode='reflect')
        scores = net(nd.array(x.transpose(2, 0, 1)[None]))[0].asnumpy()
        pred = scores.argmax(axis=0)[:h, :w]
        label = np.vectorize(lambda *c: colours[c])(*rgb.asnumpy().transpose(2, 0, 1))
        conf += confusion_matrix(pred, label, 21, 255)
    scores = segmentation_scores(conf)
    row = _read_metrics(out)[-1]
    assert float(row['whole_acc']) == pytest.approx(scores['pixel_acc'], abs=1e-6)
    assert float(row['whole_miou']) == pytest.approx(scores['mean_iou'], abs=1e-6)


@pytest.mark.slow
def test_resume_repeats_an_uninterrupted_run(two_epoch_run, small_voc_dir, tmp_path, capsys,
                                            monkeypatch):
    from d2lfcn.runfolder import RunFolder
    full, _ = two_epoch_run
    out = str(tmp_path / 'out')
    base = ['--data-dir', small_voc_dir, '--out-dir', out, '--num-epochs', '2', *TINY,
            *SCHEDULED]

    def ctrl_c(*args):  # the user stops the run once epoch 1 is saved
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunFolder, 'write_figure', ctrl_c)
        assert _run(base, capsys)[0] == 130
    assert len(_read_metrics(out)) == 1
    code, text, err = _run(base + ['--resume'], capsys)
    assert code == 0 and err == ''  # no progress bar in logs
    assert [e[0] for e in EPOCH_LINE.findall(text)] == ['2']
    resumed, uninterrupted = _read_metrics(out), _read_metrics(full)
    for key in ('loss', 'train_acc', 'test_acc', 'test_miou', 'lr'):
        np.testing.assert_allclose([float(r[key]) for r in resumed],
                                   [float(r[key]) for r in uninterrupted], rtol=1e-4)
    a = nd.load(os.path.join(out, 'last.params'))
    b = nd.load(os.path.join(full, 'last.params'))
    for k in a:
        np.testing.assert_allclose(a[k].asnumpy(), b[k].asnumpy(), rtol=1e-3, atol=1e-5)
    code, _, err = _run(base + ['--resume'], capsys)
    assert code == 2 and 'larger --num-epochs' in err


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_checkpoint(small_voc_dir, tmp_path, capsys):
    out = str(tmp_path / 'out')
    base = ['--data-dir', small_voc_dir, '--out-dir', out, *TINY]
    assert _run(base + ['--num-epochs', '1'], capsys)[0] == 0
    before = _snapshot(out)
    code, text, err = _run(base + ['--num-epochs', '3', '--resume', '--lr', '1e30'], capsys)
    assert code == 2
    assert err.count('\n') == 1
    assert re.match(r'error: the loss became (nan|inf|-inf) in epoch 2 \(batch \d+\); '
                    r'the checkpoint of epoch 1 in .* is kept; try a smaller --lr$', err)
    assert not EPOCH_LINE.search(text)
    assert _snapshot(out) == before
    # ... and the kept checkpoint still resumes.
    code, text, _ = _run(base + ['--num-epochs', '2', '--resume'], capsys)
    assert code == 0 and [e[0] for e in EPOCH_LINE.findall(text)] == ['2']


def test_a_batch_smaller_than_the_device_count_is_refused(small_voc_dir, tmp_path, capsys):
    """An idle device would add last step's stale gradient: refuse in one line."""
    out = tmp_path / 'out'
    code, _, err = _run(['--data-dir', small_voc_dir, '--out-dir', str(out), *TINY,
                         '--cpus', '4', '--batch-size', '2'], capsys)
    assert code == 2 and err == ('error: --batch-size 2: smaller than the 4 devices, each '
                                 'of which needs an example; pass a larger --batch-size '
                                 'or fewer devices\n')
    assert not out.exists()
    net = get_fcn(pretrained_base=False, ctx=[mx.cpu(0), mx.cpu(1)])
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1})
    with pytest.raises(ValueError, match='a training batch of 1 cannot give each of 2'):
        train_batch(net, nd.zeros((1, 3, 32, 32)), nd.zeros((1, 32, 32)),
                    SegmentationLoss(), trainer, [mx.cpu(0), mx.cpu(1)])


@pytest.mark.slow
def test_two_cpu_contexts(small_voc_dir, tmp_path, capsys, monkeypatch):
    """D2L's multi-device path (split_and_load) end to end, on two CPU contexts.

    The same run also covers --boundary background, --no-hybridize, --kvstore
    local and the progress bar, which shows only on a terminal.
    """
    from d2lfcn.voc import VOCSegDataset
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True)
    out = str(tmp_path / 'out')
    code, text, err = _run(['--data-dir', small_voc_dir, '--out-dir', out,
                            '--num-epochs', '1', '--cpus', '2', '--boundary', 'background',
                            '--no-hybridize', '--kvstore', 'local', *TINY], capsys)
    assert code == 0
    assert re.search(r'examples/sec on \[cpu\(0\), cpu\(1\)\]$', text, re.M)
    assert 'epoch 1: ' in err and 'batch' in err  # tqdm's bar
    rows = _read_metrics(out)
    assert len(rows) == 1 and math.isfinite(float(rows[0]['loss']))
    with open(os.path.join(out, 'args.json')) as f:
        args = json.load(f)
    assert args['devices'] == ['cpu(0)', 'cpu(1)'] and args['kvstore'] == 'local'
    # D2L's boundary: void counts as background, so predicting 0 scores more.
    labels = np.stack([y.asnumpy() for _, y in
                       VOCSegDataset(False, (64, 64), small_voc_dir, 'background')])
    assert (labels != 255).all()
    acc = re.search(r'baseline: test acc (\d\.\d{3})', text).group(1)
    assert acc == f'{(labels == 0).mean():.3f}'


@pytest.mark.slow
def test_worker_processes_repeat_the_single_process_run(two_epoch_run, small_voc_dir,
                                                         tmp_path, capsys):
    """Crops are seeded in the main process, so forked workers change nothing."""
    out = str(tmp_path / 'out')
    code, _, _ = _run(['--data-dir', small_voc_dir, '--out-dir', out, '--num-epochs', '2',
                       *TINY, *SCHEDULED, '--num-workers', '2'], capsys)
    assert code == 0
    for mine, ref in zip(_read_metrics(out), _read_metrics(two_epoch_run[0])):
        assert float(mine['loss']) == pytest.approx(float(ref['loss']), rel=1e-4)


@pytest.mark.slow
def test_demo_recipe_with_explicit_flags_winning(tmp_path, capsys, monkeypatch):
    """--demo generates the embedded set, trains from scratch; flags override it."""
    from d2lfcn import synthetic
    # A smaller embedded set than the real demo's 300 + 100 images, for speed.
    monkeypatch.setitem(synthetic.DEMO_VOC_PARAMS, 'num_train', 16)
    monkeypatch.setitem(synthetic.DEMO_VOC_PARAMS, 'num_val', 4)
    out = str(tmp_path / 'demo')
    code, text, _ = _run(['--demo', '--num-epochs', '1', '--crop-size', '64', '64',
                          '--out-dir', out], capsys)
    assert code == 0, text
    with open(os.path.join(out, 'args.json')) as f:
        args = json.load(f)
    assert args['no_pretrained_base'] is True
    assert args['num_epochs'] == 1 and args['crop_size'] == [64, 64]
    assert (args['lr'], args['momentum'], args['lr_schedule']) == (0.05, 0.9, 'poly')
    assert 'demo-voc-' in args['voc_dir']
    assert os.path.isdir(os.path.join(os.environ['D2LFCN_DATA'], os.path.basename(
        os.path.dirname(os.path.dirname(args['voc_dir'])))))
    assert len(EPOCH_LINE.findall(text)) == 1


def test_help_names_every_flag_and_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    for flag in ('--data-dir', '--demo', '--num-epochs', '--batch-size', '--crop-size',
                 '--lr', '--wd', '--no-pretrained-base', '--backbone-params',
                 '--boundary', '--gpus', '--cpus', '--num-workers', '--out-dir',
                 '--resume', '--seed', '--no-hybridize', '--lr-schedule', '--arch',
                 '--kvstore', '--amp'):
        assert flag in text
    for default in ('(default: 5; with --demo:', '(default: 32;', '(default: 320 480;',
                    '(default: 0.1;', '(default: 0.001;', '(default: ignore)',
                    '(default: fcn32s)', "(default: device, gluon.Trainer's)",
                    '(default: off, float32)'):
        assert default in text


def _closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.parametrize('argv, message', [
    (['--crop-size', '100', '96'], '--crop-size 100 96'),
    (['--crop-size', '64'], '--crop-size'),
    (['--lr', '-1'], '--lr'),
    (['--num-epochs', '0'], '--num-epochs'),
    (['--bogus'], '--bogus'),
    (['--gpus', '0'], '--gpus 0'),
    (['--data-dir', 'MISSING'], '--data-dir'),
    (['--data-dir', 'DATA', '--crop-size', '64', '64', '--batch-size', '64'],
     '--batch-size 64'),
    (['--resume'], '--resume'),
    (['--out-dir', 'FILE'], '--out-dir'),
    (['--data-dir', 'DATA', '--amp'], '--amp: mixed precision needs GPUs'),  # no GPU here
    (['--data-dir', 'DATA', '--amp', '--cpus', '2'], '--cpus'),
    (['--arch', 'fcn4s'], '--arch'),
    ([], '--data-dir'),   # no VOC2012 and no network: points to --data-dir and --demo
])
def test_user_errors_are_one_line_and_write_nothing(argv, message, tmp_path, capsys,
                                                    monkeypatch, small_voc_dir):
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path / 'data'))
    monkeypatch.setenv('D2LFCN_VOC_URL', f'http://127.0.0.1:{_closed_port()}/')
    (tmp_path / 'FILE').write_text('a file where a folder should be')
    out = tmp_path / 'out'
    names = {'DATA': small_voc_dir, 'MISSING': str(tmp_path / 'missing'),
             'FILE': str(tmp_path / 'FILE')}
    download = not argv
    argv = [names.get(a, a) for a in argv]
    if '--out-dir' not in argv:
        argv += ['--out-dir', str(out)]
    code, out_text, err = _run(argv, capsys)
    assert code == 2
    if download:  # the download announces its URL on stdout, then fails
        assert out_text.startswith('downloading http://127.0.0.1:')
        assert '--demo' in err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err
    assert not out.exists()


@pytest.mark.slow
def test_module_runs_as_a_command(tmp_path):
    """`python -m d2lfcn.train` works, with MXNet's threads set for this machine."""
    env = dict(os.environ)
    env.pop('OMP_NUM_THREADS', None)
    proc = subprocess.run([sys.executable, '-m', 'd2lfcn.train', '--crop-size', '1', '1'],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path),
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith('error: --crop-size 1 1') and proc.stderr.count('\n') == 1


@pytest.mark.slow
def test_ctrl_c_while_saving_completes_the_checkpoint(small_voc_dir, tmp_path, capsys,
                                                      monkeypatch):
    """Ctrl-C during a save takes effect after it: the run stays resumable."""
    import signal
    from d2lfcn import runfolder
    real_sha1, calls = runfolder.file_sha1, []

    def sha1_then_interrupt(path):
        calls.append(path)
        if len(calls) == 1:  # between writing last.params and state.json
            os.kill(os.getpid(), signal.SIGINT)
        return real_sha1(path)

    monkeypatch.setattr(runfolder, 'file_sha1', sha1_then_interrupt)
    out = str(tmp_path / 'out')
    base = ['--data-dir', small_voc_dir, '--out-dir', out, *TINY]
    code, _, err = _run(base + ['--num-epochs', '2'], capsys)
    assert (code, err) == (130, 'interrupted\n')
    assert [r['epoch'] for r in _read_metrics(out)] == ['1']
    monkeypatch.setattr(runfolder, 'file_sha1', real_sha1)
    code, text, _ = _run(base + ['--num-epochs', '2', '--resume'], capsys)
    assert code == 0 and [e[0] for e in EPOCH_LINE.findall(text)] == ['2']


@pytest.mark.slow
def test_resume_detects_a_checkpoint_from_another_epoch(small_voc_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    base = ['--data-dir', small_voc_dir, '--out-dir', str(out), *TINY]
    assert _run(base + ['--num-epochs', '1'], capsys)[0] == 0
    with open(out / 'state.json') as f:
        params = json.load(f)['checkpoint']['params']
    (out / params).write_bytes((out / params).read_bytes() + b'x')
    code, _, err = _run(base + ['--num-epochs', '2', '--resume'], capsys)
    assert code == 2 and err.count('\n') == 1
    assert f'{out / params} is missing or does not belong to epoch 1' in err


def test_shard_batches_split_the_training_set_into_equal_disjoint_shards():
    from d2lfcn.segdata import RandomCropSampler, ShardBatchSampler
    # One worker: exactly gluon's batching of the crop sampler, last batch dropped.
    np.random.seed(5)
    ours = list(ShardBatchSampler(11, 3))
    np.random.seed(5)
    assert ours == list(gluon.data.BatchSampler(RandomCropSampler(11), 3, 'discard'))
    assert len(ours) == 3
    # Two workers, 11 examples: shards of 6 and 5, but both take 2 batches of 2,
    # or the one with more would wait forever for the other's gradients.
    served = []
    for rank in (0, 1):
        sampler = ShardBatchSampler(11, 2, num_parts=2, part_index=rank)
        batches = list(sampler)
        assert len(sampler) == len(batches) == 2 and all(len(b) == 2 for b in batches)
        indices = [i for batch in batches for i, _ in batch]
        assert sampler.served == indices
        assert all(i % 2 == rank for i in indices)       # its own shard only
        served += indices
    assert len(set(served)) == len(served) == 8


@pytest.mark.slow
def test_arch_is_recorded_and_resuming_keeps_it(small_voc_dir, tmp_path, capsys):
    out = tmp_path / 'out'
    base = ['--data-dir', small_voc_dir, '--out-dir', str(out), *TINY]
    assert _run(base + ['--num-epochs', '1', '--arch', 'fcn16s'], capsys)[0] == 0
    with open(out / 'args.json') as f:
        assert json.load(f)['arch'] == 'fcn16s'
    saved = nd.load(str(out / 'last.params'))
    assert 'score16.weight' in saved and 'score8.weight' not in saved
    before = _snapshot(out, skip=())
    code, _, err = _run(base + ['--num-epochs', '2', '--resume'], capsys)  # fcn32s
    assert code == 2 and err.count('\n') == 1
    assert 'an fcn16s run, not --arch fcn32s; pass --arch fcn16s' in err
    assert _snapshot(out, skip=()) == before
    code, text, _ = _run(base + ['--num-epochs', '2', '--resume', '--arch', 'fcn16s'], capsys)
    assert code == 0 and [e[0] for e in EPOCH_LINE.findall(text)] == ['2']
