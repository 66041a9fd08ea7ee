"""Train and evaluate a segmentation network on several devices (D2L's train_ch13).

The loop knows nothing of command lines, files or distributed workers: the
caller passes a `reduce` for counts, hooks for epoch ends, and saves what it
wants there. Explained in chapters/fcn.md.
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
from .voc import IGNORE_LABEL

__all__ = ['SegmentationLoss', 'split_batch', 'pixel_accuracy', 'LossAndAccuracy',
           'train_batch', 'hybridize_for_training', 'evaluate_segmentation',
           'evaluate_whole_images', 'background_baseline', 'set_epoch_seed', 'lr_at',
           'TrainingDiverged', 'train_ch13']


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
    does not pool CPU memory). Pass it as train_batch's `loss`.
    Explained in chapters/fcn.md.
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
    static_alloc alone.
    Explained in chapters/fcn.md.
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
    # Every write done, also BatchNorm's running statistics, which static_shape
    # graphs update behind the engine's back (see hybridize_for_training).
    nd.waitall()
    metric = Accumulator(4)
    if sums is not None:
        metric.add(sums[0].asscalar(), sums[1].asscalar(), examples, sums[2].asscalar())
    return metric


def train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs,
               devices=None, split_f=split_batch, num_classes=21, start_epoch=0,
               seed=None, lr_fn=None, on_epoch_end=None, progress=None,
               reduce=None, on_epoch_trained=None, evaluate_f=None):
    """Train a model with multiple devices and evaluate it every epoch.

    D2L's train_ch13, plus: evaluation by the FCN paper's scores (test acc is
    pixel accuracy, void excluded), epochs seeded from (seed, epoch) for
    resumable runs, a per-update learning rate `lr_fn(step)`, and
    `on_epoch_end(record)` for checkpoints. A NaN or infinite loss raises
    TrainingDiverged. Returns the list of epoch records.

    For distributed training, `reduce(conf)` sums confusion matrices over
    workers and `on_epoch_trained(net)` runs after each epoch's updates,
    before evaluation (e.g. to average BatchNorm statistics).
    `evaluate_f(net)`, if given, returns more scores to add to each record
    (e.g. whole-image scores); its keys should not clash with the record's.

    Explained in chapters/fcn.md.
    """
    devices = devices or try_all_gpus()
    timer, history, metric, test_acc = Timer(), [], None, float('nan')
    for epoch in range(start_epoch, num_epochs):
        if seed is not None:
            set_epoch_seed(seed, epoch)
        timer.start()
        metric = _train_epoch(net, train_iter, loss, trainer, devices, split_f,
                              epoch, lr_fn, progress)
        seconds = timer.stop()
        if on_epoch_trained is not None:
            on_epoch_trained(net)
        scores = evaluate_segmentation(net, test_iter, devices, num_classes, split_f,
                                       reduce)
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
        if evaluate_f is not None:
            record.update(evaluate_f(net))
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record)
    if metric is not None:
        print(f'loss {metric[0] / metric[2]:.3f}, train acc '
              f'{metric[1] / metric[3]:.3f}, test acc {test_acc:.3f}')
        print(f'{metric[2] * len(history) / timer.sum():.1f} examples/sec on '
              f'{str(devices)}')
    return history
