"""Train D2L's FCN: the loss, the multi-device loop, and `python -m d2lfcn.train`.

Explained in chapters/fcn.md.
"""
import collections
import contextlib
import csv
import json
import math
import os
import random
import signal
import sys
import threading

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from .distributed import (ShardBatchSampler, abandon, check_kvstore_env,
                          join_workers)
from .download import file_sha1
from .metrics import SegmentationMetric, confusion_matrix, segmentation_scores
from .model import FCN_ARCHS, get_fcn
from .utils import (Accumulator, ArgumentParser, Timer, UserError, atomic_path,
                    default_data_dir, run_cli, try_all_gpus)
from .voc import IGNORE_LABEL

__all__ = ['SegmentationLoss', 'split_batch', 'pixel_accuracy', 'train_batch',
           'evaluate_segmentation', 'background_baseline', 'set_epoch_seed',
           'lr_at', 'train_ch13']



class SegmentationLoss(gluon.loss.Loss):
    """Softmax cross-entropy over the class axis, averaged over non-void pixels.

    Returns one value per example, like gluon's SoftmaxCrossEntropyLoss(axis=1)
    which D2L uses: with no void pixel in the label the two agree exactly.
    Explained in chapters/fcn.md.
    """

    def __init__(self, ignore_label=IGNORE_LABEL, **kwargs):
        super().__init__(None, 0, **kwargs)
        self._ignore_label = ignore_label

    def hybrid_forward(self, F, pred, label):
        # D2L decodes void as background (class 0) and trains on it; d2lfcn
        # leaves void pixels out of the loss (boundary='background' restores D2L).
        valid = label != self._ignore_label                # (batch, H, W)
        # MXNet's CPU softmax over the middle axis of (batch, C, H, W) is
        # single-threaded and strided; after a transpose it runs twice as fast.
        pred = F.transpose(pred, axes=(0, 2, 3, 1))        # (batch, H, W, C)
        logp = F.log_softmax(pred, axis=-1)                # (batch, H, W, C)
        nll = -F.pick(logp, label * valid, axis=-1) * valid  # (batch, H, W)
        count = F.sum(valid, axis=0, exclude=True)         # (batch,)
        return F.sum(nll, axis=0, exclude=True) / F.maximum(count, 1)


def split_batch(X, y, devices):
    """Split X and y into shards on `devices` (D2L's split_batch).

    Explained in chapters/fcn.md.
    """
    # Unlike D2L, accept batches not divisible by the device count (a last
    # partial evaluation batch) and smaller than it.
    devices = devices[:X.shape[0]]
    return (gluon.utils.split_and_load(X, devices, even_split=False),
            gluon.utils.split_and_load(y, devices, even_split=False))


def pixel_accuracy(y_hat, y, ignore_label=IGNORE_LABEL):
    """Return (correct, labelled) pixel counts as NDArrays, void left out.

    Explained in chapters/fcn.md.
    """
    valid = y != ignore_label                              # (batch, H, W)
    correct = (y_hat.argmax(axis=1) == y) * valid          # (batch, H, W)
    return correct.sum(), valid.sum()


def _sum_on(values, ctx):
    """Add scalars living on several devices, on `ctx`, in float64."""
    return nd.add_n(*[v.as_in_context(ctx).astype('float64') for v in values])


def train_batch(net, X, y, loss, trainer, devices, split_f=split_batch):
    """Train one minibatch on several devices (D2L's train_batch_ch13).

    Returns (loss sum, correct pixels, labelled pixels) as float64 NDArrays
    on devices[0]. D2L converts them to Python floats here, which waits for
    the GPU after every batch; we leave the values on the device so the
    caller can synchronise rarely.
    Explained in chapters/fcn.md.
    """
    X_shards, y_shards = split_f(X, y, devices)
    for X_shard in X_shards:
        # resnet v2 starts with a BatchNorm without parameters; MXNet updates
        # running statistics in backward, which it skips for that layer unless
        # the input needs a gradient. Without this, evaluation would use the
        # initial mean 0 and variance 1 instead of the data's statistics.
        X_shard.attach_grad()
    # amp.init_trainer(trainer) sets this (--amp); MXNet's Trainer checks the same way.
    use_amp = getattr(trainer, '_amp_loss_scaler', None) is not None
    with autograd.record():
        pred_shards = [net(X_shard) for X_shard in X_shards]
        ls = [loss(pred_shard, y_shard)
              for pred_shard, y_shard in zip(pred_shards, y_shards)]
        if use_amp:
            from mxnet.contrib import amp
            # Scale the loss up (while recording) so that small float16
            # gradients do not underflow; the trainer scales them back down
            # and skips a step whose gradients overflowed.
            with amp.scale_loss(ls, trainer) as scaled:
                autograd.backward(scaled)
    if not use_amp:
        for l in ls:
            l.backward()
    trainer.step(X.shape[0])
    accs = [pixel_accuracy(p, t) for p, t in zip(pred_shards, y_shards)]
    ctx = devices[0]
    return (_sum_on([l.sum() for l in ls], ctx),
            _sum_on([a[0] for a in accs], ctx), _sum_on([a[1] for a in accs], ctx))


def evaluate_segmentation(net, data_iter, devices, num_classes=21,
                          split_f=split_batch, reduce=None):
    """Return the FCN paper's four scores of `net` on `data_iter`, void left out.

    Runs in evaluation mode (outside autograd.record), so BatchNorm uses its
    running statistics. `reduce(conf)`, if given, returns the sum of every
    distributed worker's confusion matrix, each over its share of the data.
    Explained in chapters/fcn.md.
    """
    metric = SegmentationMetric(num_classes, IGNORE_LABEL)
    for X, y in data_iter:
        X_shards, y_shards = split_f(X, y, devices)
        metric.update([net(X_shard) for X_shard in X_shards], y_shards)
    return segmentation_scores(metric.conf if reduce is None else reduce(metric.conf))


def background_baseline(data_iter, num_classes=21, reduce=None):
    """Return the scores of predicting background (class 0) for every pixel.

    `reduce` is as in `evaluate_segmentation`. Explained in chapters/fcn.md.
    """
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    for _, y in data_iter:
        y = y.asnumpy()
        conf += confusion_matrix(np.zeros_like(y), y, num_classes, IGNORE_LABEL)
    return segmentation_scores(conf if reduce is None else reduce(conf))


def set_epoch_seed(seed, epoch):
    """Seed Python's, NumPy's and MXNet's generators from (seed, epoch).

    Each epoch's randomness (shuffling, crops) then depends only on its
    number, so a resumed run repeats an uninterrupted one: MXNet cannot save
    its generator's state. Explained in chapters/fcn.md.
    """
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    random.seed(state)
    np.random.seed(state)
    mx.random.seed(state)


def lr_at(step, total_steps, base_lr, schedule='constant', warmup_steps=0):
    """Return the learning rate of update `step` (0-based) out of `total_steps`.

    'constant' is D2L's; 'poly' (power 0.9, as in DeepLab) and 'cosine' decay
    to zero. A linear warmup over the first `warmup_steps` updates comes first.
    Explained in chapters/fcn.md.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == 'constant':
        return base_lr
    t = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    t = min(max(t, 0.0), 1.0)
    if schedule == 'poly':
        return base_lr * (1 - t) ** 0.9
    if schedule == 'cosine':
        return base_lr * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f'unknown schedule {schedule!r}')


class TrainingDiverged(UserError):
    """Signal a loss that became NaN or infinite."""


_SYNC_LAG = 2  # batches the host may run ahead of the devices


def _check_finite(value, epoch, batch):
    """Wait for one batch's loss sum; raise TrainingDiverged if not finite."""
    value = value.asscalar()
    if not math.isfinite(value):
        raise TrainingDiverged(f'the loss became {value} in epoch {epoch + 1} '
                               f'(batch {batch + 1})')
    return value


def _train_epoch(net, train_iter, loss, trainer, devices, split_f, epoch,
                 lr_fn, progress):
    """Train one epoch; return an Accumulator of (loss, correct, examples, pixels)."""
    num_batches, sums, pending, examples = len(train_iter), None, collections.deque(), 0
    batches = progress(train_iter, epoch) if progress else train_iter
    for i, (X, y) in enumerate(batches):
        if lr_fn is not None:
            trainer.set_learning_rate(lr_fn(epoch * num_batches + i))
        out = train_batch(net, X, y, loss, trainer, devices, split_f)
        sums = out if sums is None else [a + b for a, b in zip(sums, out)]
        examples += X.shape[0]
        # Wait for a batch two steps back: this bounds how far the host runs
        # ahead (memory) without ever leaving the devices idle.
        pending.append((out[0], i))
        if len(pending) > _SYNC_LAG:
            old_loss, old_i = pending.popleft()
            value = _check_finite(old_loss, epoch, old_i)
            if hasattr(batches, 'set_postfix'):  # a tqdm bar
                batches.set_postfix(loss=f'{value / X.shape[0]:.3f}', refresh=False)
    for old_loss, old_i in pending:
        _check_finite(old_loss, epoch, old_i)
    metric = Accumulator(4)
    if sums is not None:
        metric.add(sums[0].asscalar(), sums[1].asscalar(), examples, sums[2].asscalar())
    return metric


def train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs,
               devices=None, split_f=split_batch, num_classes=21, start_epoch=0,
               seed=None, lr_fn=None, on_epoch_end=None, progress=None,
               workers=None):
    """Train a model with multiple devices and evaluate it every epoch.

    D2L's train_ch13, plus: evaluation by the FCN paper's scores (test acc is
    pixel accuracy, void excluded), epochs seeded from (seed, epoch) for
    resumable runs, a per-update learning rate `lr_fn(step)`, and
    `on_epoch_end(record)` for checkpoints. A NaN or infinite loss raises
    TrainingDiverged. Returns the list of epoch records. In a distributed run
    `workers` (see `python -m d2lfcn.train --kvstore`) averages BatchNorm
    statistics after each epoch and sums the test scores' counts over workers.

    Explained in chapters/fcn.md.
    """
    reduce = None if workers is None else workers.sum_counts
    devices = devices or try_all_gpus()
    timer, history, metric, test_acc = Timer(), [], None, float('nan')
    for epoch in range(start_epoch, num_epochs):
        if seed is not None:
            set_epoch_seed(seed, epoch)
        timer.start()
        metric = _train_epoch(net, train_iter, loss, trainer, devices, split_f,
                              epoch, lr_fn, progress)
        seconds = timer.stop()
        if workers is not None:
            workers.average_aux(net)
        scores = evaluate_segmentation(net, test_iter, devices, num_classes, split_f,
                                       reduce)
        test_acc = scores['pixel_acc']
        record = {'epoch': epoch + 1, 'loss': metric[0] / metric[2],
                  'train_acc': metric[1] / metric[3], 'test_acc': test_acc,
                  'test_miou': scores['mean_iou'],
                  'test_mean_acc': scores['mean_acc'],
                  'test_fw_iou': scores['fw_iou'],
                  'lr': trainer.learning_rate, 'seconds': seconds}
        history.append(record)
        print(f"epoch {epoch + 1}: loss {record['loss']:.3f}, train acc "
              f"{record['train_acc']:.3f}, test acc {test_acc:.3f}, "
              f"test mIoU {record['test_miou']:.3f}", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(record)
    if metric is not None:
        print(f'loss {metric[0] / metric[2]:.3f}, train acc '
              f'{metric[1] / metric[3]:.3f}, test acc {test_acc:.3f}')
        print(f'{metric[2] * len(history) / timer.sum():.1f} examples/sec on '
              f'{str(devices)}')
    return history


# The book's recipe (D2L's FCN section) and the embedded demo's; flags win.
BOOK_RECIPE = dict(num_epochs=5, batch_size=32, crop_size=[320, 480], lr=0.1,
                   wd=1e-3, momentum=0.0, lr_schedule='constant', warmup_epochs=0.0,
                   out_dir=os.path.join('runs', 'fcn'))
DEMO_RECIPE = dict(num_epochs=6, batch_size=16, crop_size=[128, 128], lr=0.05,
                   wd=1e-4, momentum=0.9, lr_schedule='poly', warmup_epochs=1.0,
                   out_dir=os.path.join('runs', 'demo'))

FILES = dict(args='args.json', state='state.json', last='last.params',
             states='last.states', best='best.params', metrics='metrics.csv',
             curves='curves.png', predictions='predictions.png',
             examples='examples.json')


def _default(name):
    """Return a help suffix naming the book's and the demo's default."""
    book, demo = BOOK_RECIPE[name], DEMO_RECIPE[name]
    fmt = (lambda v: ' '.join(map(str, v))) if isinstance(book, list) else str
    return f' (default: {fmt(book)}; with --demo: {fmt(demo)})'


def _parser():
    p = ArgumentParser(
        prog='python -m d2lfcn.train',
        description="Train D2L's FCN (ResNet-18 v2 backbone) for semantic "
                    'segmentation on Pascal VOC2012, or on the embedded demo '
                    'dataset with --demo. Defaults are the book\'s recipe.',
        epilog='The out dir receives args.json (the resolved flags), last.params '
               'and last.states (the latest epoch), best.params (best test mIoU), '
               'state.json (what --resume reads), metrics.csv, curves.png and '
               'predictions.png. With a distributed --kvstore, rank 0 writes these, '
               'and every worker writes worker-RANK/last.params and examples.json '
               '(the training images it saw, per epoch). Unless OMP_NUM_THREADS is '
               'set, d2lfcn sets it to the number of cores (MXNet would use half of '
               'them).')
    a = p.add_argument
    a('--data-dir', metavar='PATH',
      help='the VOC2012 folder, or a folder holding VOCdevkit/VOC2012 '
           '(default: VOC2012 in $D2LFCN_DATA or ~/.d2lfcn/data, downloaded '
           'there when absent; with --demo: the embedded dataset, generated there)')
    a('--demo', action='store_true',
      help='train on the embedded dataset from scratch (implies '
           '--no-pretrained-base) with a recipe that ends within minutes on a '
           'CPU; flags given explicitly still win')
    a('--num-epochs', type=int, metavar='N', help='epochs to train' + _default('num_epochs'))
    a('--batch-size', type=int, metavar='N',
      help='examples per update, split over the devices; with a distributed '
           '--kvstore, per worker, so an update averages over N x workers '
           'examples' + _default('batch_size'))
    a('--crop-size', type=int, nargs=2, metavar=('H', 'W'),
      help='height and width of the training and test crops, multiples of 32'
           + _default('crop_size'))
    a('--lr', type=float, help='learning rate of SGD' + _default('lr'))
    a('--wd', type=float, help='weight decay' + _default('wd'))
    a('--momentum', type=float, help='SGD momentum' + _default('momentum'))
    a('--lr-schedule', choices=['constant', 'poly', 'cosine'],
      help='learning rate over the run: constant (D2L), poly (power 0.9) or '
           'cosine decay to 0' + _default('lr_schedule'))
    a('--warmup-epochs', type=float, metavar='E',
      help='epochs of linear learning-rate warmup' + _default('warmup_epochs'))
    a('--arch', choices=FCN_ARCHS, default='fcn32s',
      help="the network: D2L's FCN (fcn32s: class scores at stride 32, "
           "upsampled 32x), or the FCN paper's fcn16s / fcn8s, which add scores "
           'from the stride-16 (and stride-8) features (default: fcn32s)')
    a('--no-pretrained-base', action='store_true',
      help='initialise the backbone randomly instead of loading ImageNet weights '
           'from the Gluon model zoo (default: pretrained; with --demo: random)')
    a('--backbone-params', metavar='PATH',
      help='a resnet18_v2 .params file to start the backbone from (default: the '
           'model-zoo file in $MXNET_HOME/models, downloaded when absent)')
    a('--boundary', choices=['ignore', 'background'], default='ignore',
      help="VOC's void band around objects: leave it out of loss and metrics "
           "(ignore), or count it as background as D2L does (default: ignore)")
    dev = p.add_mutually_exclusive_group()
    dev.add_argument('--gpus', metavar='IDS',
                     help='comma-separated GPU ids, e.g. 0,1 (default: every '
                          'GPU, or the CPU when there is none)')
    dev.add_argument('--cpus', type=int, metavar='N',
                     help='train on N CPU contexts, splitting each batch over '
                          'them as over GPUs (default: off)')
    a('--kvstore', choices=['device', 'local', 'dist_sync', 'dist_device_sync'],
      default='device',
      help="how gradients are combined: over this machine's devices, on a device "
           '(device) or on the CPU (local); or across machines through MXNet\'s '
           'parameter server (dist_sync, dist_device_sync), each process started '
           'as a worker with the DMLC_* environment variables, see README '
           "(default: device, gluon.Trainer's)")
    a('--amp', action='store_true',
      help="train in float16 where safe, with MXNet's automatic mixed precision "
           'and dynamic loss scaling; needs GPUs (default: off, float32)')
    a('--num-workers', type=int, metavar='N',
      help='DataLoader worker processes (default: 0 on machines with at most '
           '2 cores, else 4)')
    a('--out-dir', metavar='PATH',
      help='where checkpoints, metrics and figures go' + _default('out_dir'))
    a('--resume', action='store_true',
      help="continue the run saved in --out-dir from its last epoch's checkpoint "
           '(default: start afresh)')
    a('--seed', type=int, default=0,
      help='seeds initialisation, shuffling and crops (default: 0)')
    a('--no-hybridize', action='store_true',
      help='run the network imperatively (slower; easier to debug) '
           '(default: hybridized)')
    return p


def _resolve(args):
    """Fill unset flags from the book's or the demo's recipe; check them."""
    recipe = DEMO_RECIPE if args.demo else BOOK_RECIPE
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.demo and args.backbone_params is None:
        args.no_pretrained_base = True
    h, w = args.crop_size
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise UserError(f'--crop-size {h} {w}: height and width must be positive '
                        'multiples of 32 (the FCN downsamples by 32)')
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UserError(f'--out-dir {args.out_dir}: is a file, not a folder')
    for flag, value, ok in (('--num-epochs', args.num_epochs, args.num_epochs >= 1),
                            ('--batch-size', args.batch_size, args.batch_size >= 1),
                            ('--lr', args.lr, math.isfinite(args.lr) and args.lr > 0),
                            ('--wd', args.wd, math.isfinite(args.wd) and args.wd >= 0),
                            ('--momentum', args.momentum, 0 <= args.momentum < 1),
                            ('--warmup-epochs', args.warmup_epochs,
                             0 <= args.warmup_epochs <= args.num_epochs),
                            ('--cpus', args.cpus, args.cpus is None or args.cpus >= 1),
                            ('--num-workers', args.num_workers,
                             args.num_workers is None or args.num_workers >= 0)):
        if not ok:
            raise UserError(f'{flag} {value}: out of range (see --help)')
    return args


def _devices(args):
    """Return the contexts to train on."""
    if args.cpus:
        return [mx.cpu(i) for i in range(args.cpus)]
    if args.gpus is None:
        return try_all_gpus()
    try:
        ids = [int(i) for i in args.gpus.split(',') if i.strip()]
    except ValueError:
        raise UserError(f'--gpus {args.gpus}: expected comma-separated GPU ids, '
                        'e.g. 0,1') from None
    count = mx.context.num_gpus()
    bad = [i for i in ids if not 0 <= i < count]
    if not ids or bad:
        raise UserError(f'--gpus {args.gpus}: MXNet sees {count} GPU(s); '
                        'leave out --gpus to use the CPU')
    return [mx.gpu(i) for i in ids]


def _voc_dir(args):
    """Return the VOC2012 folder to train on, generating or downloading it."""
    from . import voc, synthetic
    if args.data_dir is not None:
        if not os.path.exists(args.data_dir):
            raise UserError(f'--data-dir {args.data_dir}: no such folder')
        return voc.find_voc_dir(args.data_dir)
    if args.demo:
        return synthetic.demo_voc_dir()
    try:
        return voc.download_voc2012()  # its errors point to --data-dir and --demo
    except OSError as e:
        raise UserError(f'cannot get VOC2012 into {default_data_dir()} ({e}); pass '
                        '--data-dir PATH to an existing VOCdevkit/VOC2012, or try '
                        '--demo') from None


def _datasets(args, voc_dir):
    """Return the whole (train_set, test_set): every worker checks all the data."""
    from .voc import VOCSegDataset
    crop = tuple(args.crop_size)
    return (VOCSegDataset(True, crop, voc_dir, args.boundary),
            VOCSegDataset(False, crop, voc_dir, args.boundary))


def _load_data(args, train_set, test_set, num_parts=1, part_index=0):
    """Return (train_iter, test_iter, batch sampler) over one worker's shards."""
    from .voc import get_dataloader_workers
    workers = get_dataloader_workers() if args.num_workers is None else args.num_workers
    batches = ShardBatchSampler(len(train_set), args.batch_size, num_parts, part_index)
    if not len(batches):
        each = f' for each of {num_parts} workers' if num_parts > 1 else ''
        raise UserError(f'--batch-size {args.batch_size}: more than the '
                        f'{len(train_set) // num_parts} training images{each}; '
                        'use a smaller one')
    # Crop seeds come from the main process, so runs with workers repeat too.
    train_iter = gluon.data.DataLoader(train_set, batch_sampler=batches,
                                       num_workers=workers)
    # D2L drops the last partial test batch; d2lfcn scores every validation
    # image. Distributed workers each score a share and add up the counts.
    if num_parts > 1:
        test_set = test_set.shard(num_parts, part_index)
    test_iter = gluon.data.DataLoader(test_set, args.batch_size,
                                      last_batch='keep', num_workers=workers)
    return train_iter, test_iter, batches


def _trainer(args, net, workers):
    """Return SGD with the book's hyperparameters, combining gradients per --kvstore."""
    hyper = {'learning_rate': args.lr, 'wd': args.wd, 'momentum': args.momentum}
    if workers is None:
        trainer = gluon.Trainer(net.collect_params(), 'sgd', hyper, kvstore=args.kvstore)
    else:
        # The servers add up the workers' gradients and each worker applies the
        # same update itself: updating on the servers would keep the optimizer
        # there, out of reach of set_learning_rate and save_states. Scaling by
        # 1/workers makes each update the mean over all the workers' examples.
        hyper['rescale_grad'] = 1 / workers.num_workers
        trainer = gluon.Trainer(net.collect_params(), 'sgd', hyper, kvstore=workers.kv,
                                update_on_kvstore=False)
    if args.amp:
        from mxnet.contrib import amp
        amp.init_trainer(trainer)
    return trainer


def _check_amp(args, devices):
    """Refuse --amp on the CPU: MXNet has no float16 CPU kernels for the FCN."""
    if args.amp and any(d.device_type != 'gpu' for d in devices):
        why = '--cpus trains on the CPU' if args.cpus else 'MXNet sees no GPU'
        raise UserError(f'--amp: mixed precision needs GPUs, but {why}; drop --amp')


def _write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, 'w') as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.write('\n')


def _read_state(out_dir):
    """Return the saved run in `out_dir` after checking its checkpoint files."""
    path = os.path.join(out_dir, FILES['state'])
    if not os.path.isfile(path):
        raise UserError(f'--resume: {path} does not exist; train without --resume '
                        'first, or point --out-dir at a previous run')
    try:
        with open(path) as f:
            state = json.load(f)
        files, epoch = state['files'], int(state['epoch'])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'--resume: {path} is unreadable ({type(e).__name__}); '
                        'start afresh without --resume') from None
    for name, digest in files.items():
        fname = os.path.join(out_dir, name)
        if not os.path.isfile(fname) or file_sha1(fname) != digest:
            raise UserError(f'--resume: {fname} is missing or does not belong to '
                            f'epoch {epoch} recorded in {path}; start afresh '
                            'without --resume')
    return state


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold Ctrl-C until the block ends, so a checkpoint is never saved in part."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _save_checkpoint(out_dir, net, trainer, state, is_best):
    """Write parameters, trainer states and, last, state.json that names them.

    Every file is replaced atomically, and state.json records the checksums of
    the files it belongs to: a crash between two writes is detected on resume.
    """
    files = {}
    for key, save in (('last', net.save_parameters), ('states', trainer.save_states)):
        path = os.path.join(out_dir, FILES[key])
        with atomic_path(path) as tmp:
            save(tmp)
        files[FILES[key]] = file_sha1(path)
    if is_best:
        with atomic_path(os.path.join(out_dir, FILES['best'])) as tmp:
            net.save_parameters(tmp)
    _write_json(os.path.join(out_dir, FILES['state']), dict(state, files=files))


METRIC_COLUMNS = ['epoch', 'loss', 'train_acc', 'test_acc', 'test_miou',
                  'test_mean_acc', 'test_fw_iou', 'lr', 'seconds']


def _write_metrics(path, history):
    with atomic_path(path) as tmp:
        with open(tmp, 'w', newline='') as f:
            writer = csv.DictWriter(f, METRIC_COLUMNS, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(history)


def _save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def _save_predictions(net, dataset, devices, path, n=4):
    """Draw D2L's grid: n validation crops, predicted label maps, ground truth."""
    from .figures import plot_predictions
    from .voc import RGB_MEAN, RGB_STD
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    X = nd.stack(*[x for x, _ in items]).as_in_context(devices[0])  # (n, 3, h, w)
    preds = net(X).argmax(axis=1).asnumpy().astype(np.uint8)         # (n, h, w)
    imgs = [np.clip(x.asnumpy().transpose(1, 2, 0) * RGB_STD + RGB_MEAN, 0, 1)
            for x, _ in items]                                         # (h, w, 3)
    labels = [y.asnumpy().astype(np.uint8) for _, y in items]          # (h, w)
    _save_figure(plot_predictions(imgs, preds, labels), path)


def _progress_bar():
    """Return a tqdm wrapper for epochs on a terminal, None in logs."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return lambda it, epoch: tqdm(it, desc=f'epoch {epoch + 1}', unit='batch',
                                  leave=False)


# Flags that change what a resumed run computes, compared with the saved run.
_TRAJECTORY = ['data_dir', 'demo', 'batch_size', 'crop_size', 'lr', 'wd',
               'momentum', 'lr_schedule', 'warmup_epochs', 'boundary', 'seed']


def _note_changed_flags(args, out_dir):
    try:
        with open(os.path.join(out_dir, FILES['args'])) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    # A decaying schedule spans the whole run, so its length matters too.
    names = _TRAJECTORY + (['num_epochs'] if args.lr_schedule != 'constant' else [])
    for name in names:
        if name in saved and saved[name] != getattr(args, name):
            print(f"note: --{name.replace('_', '-')} is {getattr(args, name)} now, "
                  f'{saved[name]} in the run being resumed')


def _example_names(dataset, indices):
    """Return the image names (e.g. 2007_000032) of dataset examples."""
    return [os.path.splitext(os.path.basename(dataset.examples[i][0]))[0]
            for i in indices]


def _read_seen(worker_dir, epochs):
    """Return the first `epochs` epochs of a worker's examples.json, or {}."""
    try:
        with open(os.path.join(worker_dir, FILES['examples'])) as f:
            seen = json.load(f)
        return {k: v for k, v in seen.items() if int(k) <= epochs}
    except (OSError, ValueError, AttributeError):
        return {}


def _fcn(args, devices, num_classes):
    """Build the network --arch names, after --amp swaps in float16 operators."""
    if args.amp:
        from mxnet.contrib import amp
        amp.init()  # must precede building the network
    mx.random.seed(args.seed)
    return get_fcn(num_classes, pretrained_base=not args.no_pretrained_base,
                   ctx=devices, backbone_params=args.backbone_params, arch=args.arch)


def main(argv=None):
    """Run `python -m d2lfcn.train`: see `--help`. Explained in chapters/fcn.md."""
    from .voc import VOC_CLASSES
    args = _resolve(_parser().parse_args(argv))
    devices = _devices(args)
    _check_amp(args, devices)
    check_kvstore_env(args)
    out_dir = args.out_dir
    state = _read_state(out_dir) if args.resume else None
    if state is not None and state['epoch'] >= args.num_epochs:
        raise UserError(f"--resume: {out_dir} already holds {state['epoch']} epochs; "
                        'pass a larger --num-epochs to train on')
    if state is not None and state.get('arch', 'fcn32s') != args.arch:
        saved = state.get('arch', 'fcn32s')
        raise UserError(f'--resume: {out_dir} holds an {saved} run, not --arch '
                        f'{args.arch}; pass --arch {saved}, or another --out-dir')
    voc_dir = _voc_dir(args)
    train_set, test_set = _datasets(args, voc_dir)
    # A distributed worker joins the others here. From now on, every worker
    # must run the same steps: an error on one alone would leave the rest waiting.
    workers = join_workers(args)
    rank, num_parts = (workers.rank, workers.num_workers) if workers else (0, 1)
    train_iter, test_iter, batches = _load_data(args, train_set, test_set, num_parts,
                                                rank)
    num_classes = len(VOC_CLASSES)
    net = _fcn(args, devices, num_classes)
    trainer = _trainer(args, net, workers)
    if state is not None:
        _note_changed_flags(args, out_dir)
        net.load_parameters(os.path.join(out_dir, FILES['last']), ctx=devices)
        trainer.load_states(os.path.join(out_dir, FILES['states']))
        print(f"resuming {out_dir} after epoch {state['epoch']}")
    if workers:
        h, w = args.crop_size
        workers.share_parameters(net, trainer, nd.zeros((1, 3, h, w), ctx=devices[0]))
    if not args.no_hybridize:
        net.hybridize()

    # Everything the user can get wrong is checked; now write into out_dir.
    # Rank 0 writes the run's files; each distributed worker, its own folder.
    is_chief = rank == 0
    worker_dir = os.path.join(out_dir, f'worker-{rank}') if workers else None
    try:
        os.makedirs(worker_dir or out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f'--out-dir {out_dir}: cannot create it ({e.strerror})') from None
    if is_chief:
        if state is None and os.path.exists(os.path.join(out_dir, FILES['state'])):
            os.remove(os.path.join(out_dir, FILES['state']))  # a fresh run replaces it
        _write_json(os.path.join(out_dir, FILES['args']),
                    dict(vars(args), devices=[str(d) for d in devices], voc_dir=voc_dir,
                         dist_workers=num_parts))
    reduce = workers.sum_counts if workers else None
    base = background_baseline(test_iter, num_classes, reduce)
    print(f"all-background baseline: test acc {base['pixel_acc']:.3f}, "
          f"test mIoU {base['mean_iou']:.3f}")

    history = list(state['history']) if state else []
    best = dict(miou=state['best_miou'], epoch=state['best_epoch']) if state else \
        dict(miou=-1.0, epoch=0)
    num_batches = len(train_iter)
    start = state['epoch'] if state else 0
    seen = _read_seen(worker_dir, start) if workers and state else {}

    def lr_fn(step):
        return lr_at(step, args.num_epochs * num_batches, args.lr, args.lr_schedule,
                     round(args.warmup_epochs * num_batches))

    def on_epoch_end(record):
        from .figures import plot_training_curves
        history.append(record)
        is_best = record['test_miou'] > best['miou']  # False for NaN
        if is_best:
            best.update(miou=record['test_miou'], epoch=record['epoch'])
        if workers:
            seen[str(record['epoch'])] = _example_names(train_set, batches.served)
            with _interrupts_deferred():
                with atomic_path(os.path.join(worker_dir, FILES['last'])) as tmp:
                    net.save_parameters(tmp)
                _write_json(os.path.join(worker_dir, FILES['examples']), seen)
        if not is_chief:
            return
        with _interrupts_deferred():
            _save_checkpoint(out_dir, net, trainer, dict(
                epoch=record['epoch'], history=history, best_miou=best['miou'],
                best_epoch=best['epoch'], baseline=base, arch=args.arch), is_best)
            _write_metrics(os.path.join(out_dir, FILES['metrics']), history)
        _save_figure(plot_training_curves(history), os.path.join(out_dir, FILES['curves']))

    # Each worker shuffles and crops its shard with its own random stream;
    # rank 0's is the single-machine run's.
    seed = args.seed if rank == 0 else \
        int(np.random.SeedSequence([args.seed, rank]).generate_state(1)[0])
    try:
        train_ch13(net, train_iter, test_iter, SegmentationLoss(), trainer,
                   args.num_epochs, devices, num_classes=num_classes,
                   start_epoch=start, seed=seed, lr_fn=lr_fn,
                   on_epoch_end=on_epoch_end, progress=_progress_bar(), workers=workers)
    except TrainingDiverged as e:
        kept = (f"the checkpoint of epoch {history[-1]['epoch']} in {out_dir} is kept"
                if history else 'no checkpoint was written')
        message = f'{e}; {kept}; try a smaller --lr'
        if workers:  # other workers may notice a step later, or never
            abandon(f'error: {message}', 2)
        raise TrainingDiverged(message) from None
    except KeyboardInterrupt:
        if workers:
            abandon('interrupted', 130)
        raise
    if is_chief:
        _save_predictions(net, test_set, devices,
                          os.path.join(out_dir, FILES['predictions']))
    print(f"best test mIoU {best['miou']:.3f} (epoch {best['epoch']}, baseline "
          f"{base['mean_iou']:.3f}); saved in {out_dir}")
    return history


if __name__ == '__main__':
    run_cli(main)
