"""Give the chapters a classifier: the stand-in trained once, or ImageNet's resnet18_v2 if cached.

Explained in chapters/fully-convolutional-classifier.md.
"""
import collections
import hashlib
import inspect
import json
import os

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, init, nd
from mxnet.gluon.model_zoo import vision

from ..classifier import imagenet_classes, pretrained_classifier
from ..synthetic import read_params, demo_voc_dir
from ..utils import UserError, atomic_path, default_data_dir, why_write_failed
from ..voc import VOC_CLASSES, find_voc_dir
from ..voc import voc_examples
from .patches import STANDIN_CLASSES, object_patches

__all__ = ['Classifier', 'train_standin_classifier', 'standin_classifier_file',
           'imagenet_classifier', 'standin_classifier', 'get_classifier',
           'PRETRAINED_SIZES', 'STANDIN_SIZES', 'standin_example']


Classifier = collections.namedtuple('Classifier',
                                    ['net', 'classes', 'pretrained', 'note', 'summary'])
Classifier.__doc__ = """A classifier, its class names, whether its weights are
ImageNet's, one line saying what it is and where its weights came from, and a
shorter summary for figure titles; neither names a file of the machine."""


def _accuracy(net, X, y, batch_size=64):
    correct = 0
    for i in range(0, X.shape[0], batch_size):
        pred = net(X[i:i + batch_size]).argmax(axis=1)
        correct += (pred == y[i:i + batch_size]).sum().asscalar()
    return correct / X.shape[0]


def _refresh_batchnorm(net, X, batch_size, num_batches=30):
    """Replace BatchNorm's running statistics with those of the final weights."""
    # Running averages (momentum 0.9) still remember earlier weights after a
    # short run, and evaluation-mode predictions suffer. MXNet updates them in
    # the backward pass, so we run forward and backward without any update
    # step: 0.9 ** 30 leaves 4% of the old statistics. The input needs a
    # gradient too: resnet v2 starts with a BatchNorm without parameters,
    # whose backward (and so its statistics' update) is skipped otherwise.
    done = 0
    while 0 < batch_size <= X.shape[0] and done < num_batches:
        for i in range(0, X.shape[0] - batch_size + 1, batch_size):
            batch = X[i:i + batch_size]
            batch.attach_grad()
            with autograd.record():
                out = net(batch)
            out.backward()
            done += 1
            if done == num_batches:
                break


def train_standin_classifier(voc_dir, num_epochs=6, size=64, batch_size=32, lr=0.05,
                             max_images=None, seed=0, bn_batches=30, verbose=True):
    """Train resnet18_v2 briefly to classify object patches of a segmentation dataset.

    This is the stand-in for ImageNet weights where those are not available:
    the same architecture, with a Dense layer over STANDIN_CLASSES, trained on
    `object_patches` of `voc_dir` (the embedded dataset) on the CPU, with SGD
    whose learning rate decays linearly to 0; BatchNorm's statistics are then
    re-estimated on `bn_batches` batches. Returns (net, validation patch
    accuracy).
    Explained in chapters/fully-convolutional-classifier.md.
    """
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    X, y = object_patches(voc_dir, True, size, max_images, seed)
    X_val, y_val = object_patches(voc_dir, False, size, max_images, seed)
    batch_size = min(batch_size, X.shape[0])  # a tiny dataset is one batch
    net = vision.resnet18_v2(classes=len(STANDIN_CLASSES))
    net.initialize(init.Xavier())
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': lr, 'momentum': 0.9, 'wd': 1e-4})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    steps_per_epoch = X.shape[0] // batch_size
    total_steps, step = num_epochs * steps_per_epoch, 0
    for epoch in range(num_epochs):
        order = nd.array(rng.permutation(X.shape[0]))
        total = 0.0
        for i in range(0, steps_per_epoch * batch_size, batch_size):
            # Decay linearly to 0: the weights settle at the end, so BatchNorm's
            # running statistics (which MXNet updates in backward) catch up with
            # them and evaluation-mode predictions match training-mode ones.
            trainer.set_learning_rate(lr * (1 - step / total_steps))
            step += 1
            idx = order[i:i + batch_size]
            Xb, yb = X.take(idx), y.take(idx)
            if rng.random() < 0.5:
                Xb = Xb.flip(axis=3)  # mirror the whole batch: cheap augmentation
            with autograd.record():
                l = loss(net(Xb), yb)
            l.backward()
            trainer.step(batch_size)
            total += l.sum().asscalar()
        if verbose:
            print(f'stand-in epoch {epoch + 1}: loss {total / X.shape[0]:.3f}')
    _refresh_batchnorm(net, X, batch_size, bn_batches)
    acc = _accuracy(net, X_val, y_val)
    if verbose:
        print(f'stand-in: {X.shape[0]} training patches, validation patch '
              f'accuracy {acc:.3f}')
    return net, acc


# The stand-in as a pretrained backbone, trained once and cached on disk
# (chapters/fcn.md trains an FCN from it; get_classifier reuses the same file).
_STANDIN_VERSION = 1  # bump when train_standin_classifier learns differently
_STANDIN_SIGNATURE = inspect.signature(train_standin_classifier)  # its defaults


def _standin_key(voc_dir, standin_kwargs):
    """Return (file stem, description) of the stand-in these arguments train."""
    bound = _STANDIN_SIGNATURE.bind(voc_dir, **standin_kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k not in ('voc_dir', 'verbose')}
    # A generated set is named by its parameters, any other folder by its path.
    dataset = read_params(voc_dir) or os.path.realpath(voc_dir)
    info = dict(args, dataset=dataset, classes=STANDIN_CLASSES, version=_STANDIN_VERSION)
    digest = hashlib.sha1(json.dumps(info, sort_keys=True).encode()).hexdigest()[:8]
    return f'standin-resnet18_v2-{digest}', info


def standin_classifier_file(voc_dir=None, data_dir=None, **standin_kwargs):
    """Return the .params file of the stand-in classifier, training it on first use.

    The weights of `train_standin_classifier(voc_dir, **standin_kwargs)` are
    kept in `data_dir` (default: `default_data_dir()`) under a name made from
    those arguments and the dataset, with a .json file next to them holding
    the validation accuracy; later calls with the same arguments return the
    file at once. `voc_dir` defaults to the embedded demo dataset. The file
    fits `get_fcn(backbone_params=...)` (`--backbone-params`).
    Explained in chapters/fcn.md.
    """
    voc_dir = demo_voc_dir(data_dir) if voc_dir is None else find_voc_dir(voc_dir)
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    stem, info = _standin_key(voc_dir, standin_kwargs)
    path = os.path.join(data_dir, stem + '.params')
    if os.path.isfile(path) and _standin_accuracy(path) is not None:
        return path
    net, acc = train_standin_classifier(voc_dir, **standin_kwargs)
    try:
        # The accuracy first, the weights last: a complete pair marks a usable file.
        with atomic_path(path[:-len('.params')] + '.json') as tmp:
            with open(tmp, 'w') as f:
                json.dump(dict(info, val_acc=acc), f, sort_keys=True)
        with atomic_path(path) as tmp:
            net.save_parameters(tmp)
    except (OSError, mx.base.MXNetError) as e:
        why = why_write_failed(e)
        raise UserError(f'cannot keep the stand-in classifier in {data_dir} ({why}); '
                        'set D2LFCN_DATA to a writable folder') from None
    return path


def _standin_accuracy(path):
    """Return the validation accuracy saved next to a cached stand-in, or None."""
    try:
        with open(path[:-len('.params')] + '.json') as f:
            return float(json.load(f)['val_acc'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def imagenet_classifier(ctx=None):
    """Return ImageNet's resnet18_v2 as a `Classifier` if its weights are cached, else None.

    Only the model zoo's cache ($MXNET_HOME/models) is looked at: nothing is
    downloaded. Explained in chapters/fully-convolutional-classifier.md.
    """
    net = pretrained_classifier(ctx)
    if net is None:
        return None
    summary = 'resnet18_v2 with pretrained ImageNet weights'
    return Classifier(net, imagenet_classes(), True,
                      summary + " (1000 classes), from the model zoo's cache", summary)


def standin_classifier(voc_dir=None, ctx=None, **standin_kwargs):
    """Return the stand-in classifier as a `Classifier`, training it on first use.

    Parameters
    ----------
    voc_dir : str, optional
        Dataset the stand-in trains on (default: the embedded demo dataset).
    ctx : Context, optional
        Where the weights are loaded (the stand-in trains on the CPU).
    **standin_kwargs
        Passed to `train_standin_classifier` (num_epochs, max_images, ...),
        through `standin_classifier_file`, which trains it once and caches it.

    Its `note` and `summary` say what it is and name no file.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    # Trained once, then read from its cache (chapters/fcn.md uses the same file).
    path = standin_classifier_file(voc_dir, **standin_kwargs)
    net = vision.resnet18_v2(classes=len(STANDIN_CLASSES))
    net.load_parameters(path, ctx=ctx or mx.cpu())
    net.hybridize()
    acc = _standin_accuracy(path)
    note = (f'STAND-IN, not ImageNet weights: resnet18_v2 trained briefly on object '
            f'patches of the embedded dataset ({len(STANDIN_CLASSES)} classes, '
            f'validation patch accuracy {acc:.2f})')
    summary = (f'STAND-IN (no pretrained weights): resnet18_v2 trained briefly on object '
               f'patches of the embedded dataset, validation accuracy {acc:.2f}')
    return Classifier(net, list(STANDIN_CLASSES), False, note, summary)


def get_classifier(voc_dir=None, ctx=None, **standin_kwargs):
    """Return `imagenet_classifier(ctx)` if the weights are cached, else `standin_classifier`.

    The arguments are those of `standin_classifier`. Explained in
    chapters/fully-convolutional-classifier.md.
    """
    return imagenet_classifier(ctx) or standin_classifier(voc_dir, ctx, **standin_kwargs)


# Input sizes (shorter side, pixels) of the heatmap demos: ImageNet's
# classifier saw 224-pixel images; the stand-in saw 64-pixel object patches.
PRETRAINED_SIZES = (224, 320, 448)
STANDIN_SIZES = (96, 160, 224)


def standin_example(voc_dir, is_train=False, min_classes=2, min_side=0):
    """Return (image, label, class names) of the first example with several objects.

    The example has more than `min_classes` classes (background included) and
    a shorter side of at least `min_side` pixels; failing that, the one with
    the most classes. The label holds VOC class ids, void counted as
    background; the names are those of the classes in it. Explained in
    chapters/fully-convolutional-classifier.md.
    """
    best = None
    for image, ids in voc_examples(voc_dir, is_train, 50, boundary='background'):
        names = [VOC_CLASSES[c] for c in np.unique(ids)]
        if best is None or len(names) > len(best[2]):
            best = (image, ids, names)
        if len(names) > min_classes and min(ids.shape) >= min_side:
            return image, ids, names
    return best
