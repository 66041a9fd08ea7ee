"""Train and evaluate a segmentation network on several devices: D2L's train_ch13.

The loop knows nothing of command lines, files or distributed workers:
whatever else a run does (seeds, learning-rate schedules, progress bars,
whole-image scores, checkpoints, other workers) comes in as `Callback`s,
which the loop calls at fixed points, like minGPT's callbacks.

Two choices here are for speed only, and change no result: SegmentationLoss
moves the class axis last before its softmax (MXNet's CPU softmax over the
middle axis of (batch, C, H, W) is single-threaded and strided, about half
as fast), and LossAndAccuracy with hybridize_for_training, which the
training command uses, keep the scores inside one graph whose memory is
planned once (benchmarks/bench_train.py measures both).
Explained in chapters/fcn.md.
"""
import collections
import math
import random

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

from .inference import padded_scores
from .metrics import SegmentationMetric, confusion_matrix, segmentation_scores
from .utils import Accumulator, Timer, UserError, try_all_gpus
from .segmaps import IGNORE_LABEL

__all__ = ['SegmentationLoss', 'split_batch', 'pixel_accuracy', 'LossAndAccuracy',
           'train_batch', 'hybridize_for_training', 'evaluate_segmentation',
           'evaluate_whole_images', 'background_baseline', 'set_epoch_seed', 'lr_at',
           'TrainingDiverged', 'Callback', 'Hooks', 'EpochSeeds', 'LearningRateSchedule',
           'WholeImageScores', 'train_ch13']


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
        # The class scores of each pixel side by side, on the last axis.
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
    # partial evaluation batch) and smaller than it (evaluation only: in
    # training every device must compute a gradient, see train_batch).
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


class LossAndAccuracy(gluon.HybridBlock):
    """Compute each example's loss and the batch's pixel counts in one graph.

    `LossAndAccuracy(net, loss)(X, y)` returns (loss(net(X), y), correct
    pixels, labelled pixels), the counts as `pixel_accuracy` makes them.
    Hybridized, the scores (batch x classes x H x W) stay inside one cached
    graph: passed from the network to the loss, they and their gradient
    would be fresh arrays every step, allocated afresh on the CPU (MXNet 1.9
    does not pool CPU memory). Pass it as train_batch's `loss`. The training
    command (`fit` in d2lfcn/job.py) uses it; chapters/fcn.md trains with
    D2L's plain loss, which computes the same.
    """

    def __init__(self, net, loss, ignore_label=IGNORE_LABEL):
        super().__init__(prefix='')  # no parameters of its own: net's keep their names
        self.net, self.loss, self._ignore_label = net, loss, ignore_label

    def hybrid_forward(self, F, X, y):
        pred = self.net(X)                                 # (batch, classes, H, W)
        return (self.loss(pred, y),) + pixel_accuracy(pred, y, self._ignore_label)


def hybridize_for_training(block, num_devices=1):
    """Hybridize `block` and its children for fixed-size crops, memory planned once.

    Training crops, and evaluation crops but a smaller last batch, all have
    one shape: with static_alloc and static_shape, MXNet allocates memory and
    creates its operators once instead of every step (a new shape re-plans,
    correctly, but slowly). For whole images, a new shape each, hybridize the
    network plainly (`net.hybridize()`) first.

    MXNet 1.9's static_shape graphs write BatchNorm's running statistics
    through arrays the engine does not tie to the parameters: reading them
    needs `nd.waitall()` first (train_ch13 waits after every epoch), and on
    several devices the first step's update is lost. So several devices get
    static_alloc alone. The training command (`fit` in d2lfcn/job.py) uses
    it; chapters/fcn.md hybridizes plainly, as D2L does.
    """
    block.hybridize(static_alloc=True, static_shape=num_devices == 1)


def train_batch(net, X, y, loss, trainer, devices, split_f=split_batch):
    """Train one minibatch on several devices (D2L's train_batch_ch13).

    `loss` is a per-example loss of net(X) and y, as in D2L, or a
    `LossAndAccuracy` of `net` and such a loss (faster, hybridized).
    Returns (loss sum, correct pixels, labelled pixels) as float64 NDArrays
    on devices[0]. D2L converts them to Python floats here, which waits for
    the GPU after every batch; we leave the values on the device so the
    caller can synchronise rarely.
    Explained in chapters/fcn.md.
    """
    if X.shape[0] < len(devices):
        # An idle device would keep last step's gradient, which the trainer
        # would add in (or, told to ignore it, leave that copy un-updated).
        raise ValueError(f'a training batch of {X.shape[0]} cannot give each of '
                         f'{len(devices)} devices an example')
    if isinstance(loss, LossAndAccuracy):
        step = loss
    else:  # D2L's way: the scores leave the network's graph
        def step(X_shard, y_shard):
            pred = net(X_shard)
            with autograd.pause():  # the counts need no gradient
                counts = pixel_accuracy(pred, y_shard)
            return (loss(pred, y_shard),) + counts
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
        # One (loss, correct, labelled) per shard.
        outs = [step(X_shard, y_shard) for X_shard, y_shard in zip(X_shards, y_shards)]
        ls = [out[0] for out in outs]
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
    ctx = devices[0]
    return (_sum_on([l.sum() for l in ls], ctx),
            _sum_on([out[1] for out in outs], ctx), _sum_on([out[2] for out in outs], ctx))


def evaluate_segmentation(net, data_iter, devices, num_classes=None,
                          split_f=split_batch, reduce=None):
    """Return the FCN paper's four scores of `net` on `data_iter`, void left out.

    Runs in evaluation mode (outside autograd.record), so BatchNorm uses its
    running statistics. `num_classes` defaults to the network's output
    channels. `reduce(conf)`, if given, returns the sum of every distributed
    worker's confusion matrix, each over its share of the data.
    Explained in chapters/fcn.md.
    """
    metric = None if num_classes is None else SegmentationMetric(num_classes, IGNORE_LABEL)
    for X, y in data_iter:
        X_shards, y_shards = split_f(X, y, devices)
        preds = [net(X_shard) for X_shard in X_shards]     # (batch, C, H, W) each
        metric = metric or SegmentationMetric(preds[0].shape[1], IGNORE_LABEL)
        metric.update(preds, y_shards)
    return segmentation_scores(metric.conf if reduce is None else reduce(metric.conf))


def evaluate_whole_images(net, dataset, devices, num_classes=21, reduce=None):
    """Return the four scores of `net` on whole images, as the FCN paper evaluates.

    `dataset` yields whole (3, H, W) images and (H, W) labels (a
    `VOCSegDataset` with crop_size=None). Each image is reflect-padded to
    multiples of 32 and only its own pixels are scored. `reduce` is as in
    `evaluate_segmentation`. Explained in chapters/fcn.md.
    """
    metric = SegmentationMetric(num_classes, IGNORE_LABEL)
    for i in range(len(dataset)):
        X, y = dataset[i]                               # (3, H, W), (H, W)
        # Images take turns on the devices; MXNet runs them concurrently.
        scores = padded_scores(net, X.asnumpy().transpose(1, 2, 0),
                               devices[i % len(devices)])  # (C, H, W)
        metric.update(scores.expand_dims(0), y.expand_dims(0))
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


class Callback:
    """Listen to `train_ch13`'s events; every method does nothing unless overridden.

    Explained in chapters/fcn.md.
    """

    def on_epoch_begin(self, epoch):
        """Run before epoch `epoch` (0-based) trains."""

    def on_batch_begin(self, step):
        """Run before update `step` (0-based, counted over the whole run)."""

    def on_batch_end(self, step, loss):
        """Run once update `step`'s mean loss is known (a few updates later)."""

    def on_epoch_trained(self, net):
        """Run after an epoch's updates, before it is evaluated."""

    def reduce(self, conf):
        """Return a confusion matrix combined with other workers' (default: as is)."""
        return conf

    def on_epoch_end(self, record):
        """Run after the evaluation; `record` holds the epoch's scores and may grow."""


class Hooks:
    """The callbacks `train_ch13` calls, in order, and the epoch it starts at.

    `start_epoch` > 0 continues a run whose first epochs are done (the
    network and trainer restored from a checkpoint).
    Explained in chapters/fcn.md.
    """

    def __init__(self, *callbacks, start_epoch=0):
        self.callbacks, self.start_epoch = list(callbacks), start_epoch

    def add(self, callback):
        """Append `callback` (minGPT's add_callback); return it."""
        self.callbacks.append(callback)
        return callback

    def fire(self, event, *args):
        for callback in self.callbacks:
            getattr(callback, event)(*args)

    def reduce(self, conf):
        for callback in self.callbacks:
            conf = callback.reduce(conf)
        return conf


class EpochSeeds(Callback):
    """Seed every epoch from (seed, epoch) with `set_epoch_seed`.

    Explained in chapters/fcn.md.
    """

    def __init__(self, seed):
        self.seed = seed

    def on_epoch_begin(self, epoch):
        set_epoch_seed(self.seed, epoch)


class LearningRateSchedule(Callback):
    """Set the trainer's learning rate to `lr_fn(step)` before every update.

    Explained in chapters/fcn.md.
    """

    def __init__(self, trainer, lr_fn):
        self.trainer, self.lr_fn = trainer, lr_fn

    def on_batch_begin(self, step):
        self.trainer.set_learning_rate(self.lr_fn(step))


class WholeImageScores(Callback):
    """Add whole-image scores (`evaluate_whole_images`) to every epoch's record.

    The record gains whole_acc, whole_mean_acc, whole_miou and whole_fw_iou.
    Explained in chapters/fcn.md.
    """

    def __init__(self, net, dataset, devices, num_classes=21, reduce=None):
        self.net, self.dataset, self.devices = net, dataset, devices
        self.num_classes, self.reduce_f = num_classes, reduce

    def on_epoch_end(self, record):
        scores = evaluate_whole_images(self.net, self.dataset, self.devices,
                                       self.num_classes, self.reduce_f)
        names = dict(pixel_acc='acc', mean_acc='mean_acc', mean_iou='miou', fw_iou='fw_iou')
        record.update({'whole_' + names[k]: v for k, v in scores.items()})
        print(f"  whole images: pixel acc {record['whole_acc']:.3f}, mean acc "
              f"{record['whole_mean_acc']:.3f}, mIoU {record['whole_miou']:.3f}, "
              f"fw IoU {record['whole_fw_iou']:.3f}", flush=True)


_SYNC_LAG = 2  # batches the host may run ahead of the devices


def _check_finite(pending, epoch, hooks):
    """Wait for one batch's loss sum; raise TrainingDiverged if it is not finite."""
    loss, batch, step, size = pending
    value = loss.asscalar()
    if not math.isfinite(value):
        raise TrainingDiverged(f'the loss became {value} in epoch {epoch + 1} '
                               f'(batch {batch + 1})')
    hooks.fire('on_batch_end', step, value / size)


def _train_epoch(net, train_iter, loss, trainer, devices, split_f, epoch, hooks):
    """Train one epoch; return an Accumulator of (loss, correct, examples, pixels)."""
    num_batches, sums, pending, examples = len(train_iter), None, collections.deque(), 0
    for i, (X, y) in enumerate(train_iter):
        step = epoch * num_batches + i
        hooks.fire('on_batch_begin', step)
        out = train_batch(net, X, y, loss, trainer, devices, split_f)
        sums = out if sums is None else [a + b for a, b in zip(sums, out)]
        examples += X.shape[0]
        # Wait for a batch two steps back: this bounds how far the host runs
        # ahead (memory) without ever leaving the devices idle.
        pending.append((out[0], i, step, X.shape[0]))
        if len(pending) > _SYNC_LAG:
            _check_finite(pending.popleft(), epoch, hooks)
    while pending:
        _check_finite(pending.popleft(), epoch, hooks)
    # Every write done, also BatchNorm's running statistics, which static_shape
    # graphs update behind the engine's back (see hybridize_for_training).
    nd.waitall()
    metric = Accumulator(4)
    if sums is not None:
        metric.add(sums[0].asscalar(), sums[1].asscalar(), examples, sums[2].asscalar())
    return metric


def train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs,
               devices=None, split_f=split_batch, hooks=None):
    """Train a model with multiple devices and evaluate it every epoch.

    D2L's train_ch13, evaluating with the FCN paper's scores (test acc is
    pixel accuracy, void excluded, and test mIoU is printed too), and with
    one more argument: `hooks`, a `Hooks` of `Callback`s for everything else
    a run does. A NaN or infinite loss raises TrainingDiverged. Returns the
    list of epoch records.
    Explained in chapters/fcn.md.
    """
    devices = devices or try_all_gpus()
    hooks = hooks or Hooks()
    timer, history, metric, test_acc = Timer(), [], None, float('nan')
    for epoch in range(hooks.start_epoch, num_epochs):
        hooks.fire('on_epoch_begin', epoch)
        timer.start()
        metric = _train_epoch(net, train_iter, loss, trainer, devices, split_f,
                              epoch, hooks)
        seconds = timer.stop()
        hooks.fire('on_epoch_trained', net)
        scores = evaluate_segmentation(net, test_iter, devices, split_f=split_f,
                                       reduce=hooks.reduce)
        test_acc = scores['pixel_acc']
        record = {'epoch': epoch + 1, 'loss': metric[0] / metric[2],
                  'train_acc': metric[1] / metric[3], 'test_acc': test_acc,
                  'test_miou': scores['mean_iou'],
                  'test_mean_acc': scores['mean_acc'],
                  'test_fw_iou': scores['fw_iou'],
                  'lr': trainer.learning_rate, 'seconds': seconds}
        print(f"epoch {epoch + 1}: loss {record['loss']:.3f}, train acc "
              f"{record['train_acc']:.3f}, test acc {test_acc:.3f}, "
              f"test mIoU {record['test_miou']:.3f}", flush=True)
        hooks.fire('on_epoch_end', record)
        history.append(record)
    if metric is not None:
        print(f'loss {metric[0] / metric[2]:.3f}, train acc '
              f'{metric[1] / metric[3]:.3f}, test acc {test_acc:.3f}')
        print(f'{metric[2] * len(history) / timer.sum():.1f} examples/sec on '
              f'{str(devices)}')
    return history
