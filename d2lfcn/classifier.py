"""Turn resnet18_v2's classifier into a fully convolutional network of class heatmaps.

Explained in chapters/fully-convolutional-classifier.md.
"""
import collections
import hashlib
import inspect
import json
import os
import textwrap

import cv2
import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, init, nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import vision

from .conv import dense_to_conv1x1
from .model import STRIDE, backbone_file
from .voc import (VOC_CLASSES, find_voc_dir, normalize_image, read_voc_images,
                  voc_colormap2label)
from .synthetic import SYNTHETIC_CLASSES
from .utils import UserError, atomic_path, default_data_dir, to_numpy, why_write_failed

__all__ = ['STANDIN_CLASSES', 'Classifier', 'imagenet_classes',
           'pretrained_classifier', 'to_fully_convolutional', 'object_patches',
           'train_standin_classifier', 'get_classifier', 'resize_to_multiple',
           'stable_softmax', 'class_heatmaps', 'VOC_GROUPS', 'IMAGENET_DOGS',
           'class_groups', 'group_heatmap', 'combine_heatmaps', 'plot_heatmaps',
           'PRETRAINED_SIZES', 'STANDIN_SIZES', 'standin_example', 'heatmap_figure']

# The stand-in's classes: background plus the embedded dataset's objects.
STANDIN_CLASSES = ['background'] + [VOC_CLASSES[c] for c in SYNTHETIC_CLASSES]

Classifier = collections.namedtuple('Classifier',
                                    ['net', 'classes', 'pretrained', 'note', 'summary'])
Classifier.__doc__ = """A classifier, its class names, whether its weights are
ImageNet's, one line saying where the weights came from, and a shorter
summary (no file paths) for figure titles."""


def imagenet_classes():
    """Return the 1000 ImageNet class names in the model zoo's order.

    Explained in chapters/fully-convolutional-classifier.md.
    """
    from gluoncv.data.imagenet.classification import ImageNet1kAttr
    return list(ImageNet1kAttr().classes)


def pretrained_classifier(ctx=None):
    """Return resnet18_v2 with ImageNet weights from the model-zoo cache, or None.

    Only the cache ($MXNET_HOME/models) is looked at: nothing is downloaded.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    path = backbone_file()
    if not os.path.isfile(path):
        return None
    net = vision.resnet18_v2()
    net.load_parameters(path, ctx=ctx or mx.cpu())
    return net


def to_fully_convolutional(classifier):
    """Return a network computing `classifier`'s class scores at every position.

    The Dense layer becomes a 1x1 convolution with the same weights, and the
    global average pooling and flatten go; the features are shared, not copied.
    Maps (N, 3, H, W) to (N, classes, H/32, W/32) for a resnet18_v2.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    net = nn.HybridSequential(prefix='')
    net.add(*classifier.features[:-2])               # up to (N, 512, H/32, W/32)
    net.add(dense_to_conv1x1(classifier.output))     # (N, classes, H/32, W/32)
    return net


def _class_ids(label_rgb, colormap2label):
    """Return the (H, W) int class ids of a VOC colour label (void counts as 0).

    `colormap2label` is `voc_colormap2label()` as a numpy array: D2L's lookup,
    done in numpy because MXNet gathers from a 16M-entry table slowly.
    """
    rgb = label_rgb.asnumpy().astype(np.int64)
    return colormap2label[(rgb[..., 0] * 256 + rgb[..., 1]) * 256 + rgb[..., 2]].astype(np.int64)


def _square_box(mask, margin=0.1):
    """Return (top, left, side) of a square around the True pixels of `mask`."""
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    side = (1 + 2 * margin) * max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
    return int(round(cy - side / 2)), int(round(cx - side / 2)), int(round(side))


def _crop_square(img, top, left, side):
    """Crop a square, padding by edge replication where it leaves the image."""
    h, w = img.shape[:2]
    pad = max(0, -top, -left, top + side - h, left + side - w)
    if pad:
        img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return img[top + pad:top + pad + side, left + pad:left + pad + side]


def object_patches(voc_dir, is_train=True, size=64, max_images=None, seed=0,
                   min_pixels=200):
    """Cut labelled square patches from a segmentation dataset, one per object class.

    Every class with at least `min_pixels` pixels in an image gives the
    square around them; each image also gives one background-only patch
    when it has one. Returns (X, y): (N, 3, size, size) float32 normalised
    with ImageNet statistics, and (N,) indices into STANDIN_CLASSES.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    rng = np.random.default_rng(seed)
    features, labels = read_voc_images(voc_dir, is_train, max_images=max_images)
    colormap2label = voc_colormap2label().asnumpy()
    index = {voc_id: i for i, voc_id in enumerate([0] + list(SYNTHETIC_CLASSES))}
    patches, targets = [], []
    for feature, label in zip(features, labels):
        img = feature.asnumpy()
        ids = _class_ids(label, colormap2label)
        for voc_id, count in enumerate(np.bincount(ids.ravel(), minlength=len(VOC_CLASSES))):
            if voc_id and voc_id in index and count >= min_pixels:
                patches.append(_crop_square(img, *_square_box(ids == voc_id)))
                targets.append(index[voc_id])
        side = min(img.shape[:2]) // 2
        for _ in range(10):  # a few tries at an object-free window
            top = rng.integers(0, img.shape[0] - side + 1)
            left = rng.integers(0, img.shape[1] - side + 1)
            if (ids[top:top + side, left:left + side] == 0).mean() > 0.97:
                patches.append(img[top:top + side, left:left + side])
                targets.append(0)
                break
    if not patches:
        raise UserError(f'{voc_dir}: no object or background patches in the '
                        f'{"train" if is_train else "val"} split to train a classifier on')
    X = np.stack([normalize_image(cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA))
                  .asnumpy().transpose(2, 0, 1) for p in patches])  # (N, 3, size, size)
    return nd.array(X), nd.array(targets)


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


def get_classifier(voc_dir=None, ctx=None, **standin_kwargs):
    """Return the pretrained ImageNet resnet18_v2 if cached, else a stand-in.

    Parameters
    ----------
    voc_dir : str, optional
        Dataset the stand-in trains on (default: the embedded demo dataset).
    ctx : Context, optional
        Where the pretrained weights are loaded (the stand-in trains on the CPU).
    **standin_kwargs
        Passed to `train_standin_classifier` (num_epochs, max_images, ...),
        through `standin_classifier_file`, which trains it once and caches it.

    Returns a `Classifier(net, classes, pretrained, note, summary)`; `note`
    says in one line which weights are used. Explained in
    chapters/fully-convolutional-classifier.md.
    """
    net = pretrained_classifier(ctx)
    if net is not None:
        return Classifier(net, imagenet_classes(), True,
                          f'pretrained ImageNet weights from {backbone_file()}',
                          'resnet18_v2 with pretrained ImageNet weights')
    # Trained once, then read from its cache (chapters/fcn.md uses the same file).
    path = standin_classifier_file(voc_dir, **standin_kwargs)
    net = vision.resnet18_v2(classes=len(STANDIN_CLASSES))
    net.load_parameters(path, ctx=ctx or mx.cpu())
    net.hybridize()
    acc = _standin_accuracy(path)
    note = (f'STAND-IN: no pretrained weights at {backbone_file()}, so this '
            f'resnet18_v2 was trained briefly on object patches of the embedded '
            f'dataset ({len(STANDIN_CLASSES)} classes, validation accuracy {acc:.2f})')
    summary = (f'STAND-IN (no pretrained weights): resnet18_v2 trained briefly on object '
               f'patches of the embedded dataset, validation accuracy {acc:.2f}')
    return Classifier(net, list(STANDIN_CLASSES), False, note, summary)


def resize_to_multiple(img, short_side, multiple=STRIDE):
    """Resize an (H, W, 3) image so its shorter side is about `short_side`, sides multiples of 32.

    Explained in chapters/fully-convolutional-classifier.md.
    """
    h, w = img.shape[:2]
    scale = short_side / min(h, w)
    new_h = max(multiple, int(round(h * scale / multiple)) * multiple)
    new_w = max(multiple, int(round(w * scale / multiple)) * multiple)
    return cv2.resize(np.asarray(img), (new_w, new_h), interpolation=cv2.INTER_AREA)


def stable_softmax(scores, axis=1):
    """Compute a softmax along `axis`, subtracting the maximum first.

    exp(s - max) lies in (0, 1], so nothing overflows, and the largest term is
    1, so the sum cannot underflow to 0; the result equals exp(s) / sum exp(s).
    Explained in chapters/fully-convolutional-classifier.md.
    """
    shifted = scores - scores.max(axis=axis, keepdims=True)  # <= 0
    e = nd.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def class_heatmaps(fcn, img, sizes, ctx=None):
    """Return one (C, h, w) map of class probabilities per input size.

    `img` is an (H, W, 3) RGB uint8 image; for each entry of `sizes` it is
    resized with `resize_to_multiple`, so the map has one cell per 32 input
    pixels (the output stride) along each side. Explained in
    chapters/fully-convolutional-classifier.md.
    """
    ctx = ctx or mx.cpu()
    maps = []
    for short_side in sizes:
        x = normalize_image(resize_to_multiple(img, short_side))  # (32h, 32w, 3)
        X = x.transpose((2, 0, 1)).expand_dims(0).as_in_context(ctx)
        maps.append(stable_softmax(fcn(X))[0])   # (C, h, w), sums to 1 over C
    return maps


# The VOC2012 devkit's four top-level categories of its 20 object classes.
VOC_GROUPS = {
    'person': ['person'],
    'animal': ['bird', 'cat', 'cow', 'dog', 'horse', 'sheep'],
    'vehicle': ['aeroplane', 'bicycle', 'boat', 'bus', 'car', 'motorbike', 'train'],
    'indoor': ['bottle', 'chair', 'diningtable', 'potted plant', 'sofa', 'tv/monitor'],
}
# ImageNet-1k's 118 dog breeds, 'Chihuahua' (151) to 'Mexican hairless' (268).
IMAGENET_DOGS = range(151, 269)


def class_groups(classes):
    """Return {group name: indices into `classes`} of the groups with members there.

    1000 classes are taken to be ImageNet-1k's, in the model zoo's order: they
    give the group 'dog' of its 118 breeds. Other classes are grouped by
    VOC_GROUPS. Explained in chapters/fully-convolutional-classifier.md.
    """
    if len(classes) == 1000:
        return {'dog': list(IMAGENET_DOGS)}
    groups = {name: [classes.index(c) for c in members if c in classes]
              for name, members in VOC_GROUPS.items()}
    return {name: ids for name, ids in groups.items() if ids}


def group_heatmap(probs, class_ids):
    """Return a group's probability at every position of (C, h, w) `probs`.

    The classes are disjoint events, so the group's probability is the sum
    of theirs. Explained in chapters/fully-convolutional-classifier.md.
    """
    ids = nd.array(class_ids, ctx=probs.context)
    return nd.take(probs, ids, axis=0).sum(axis=0)        # (h, w)


def combine_heatmaps(maps, how='arithmetic', size=None):
    """Combine class-probability maps of several sizes into one (C, h, w) map.

    Each map is resized bilinearly (pixel centres aligned) to `size` (default:
    the largest map's). 'arithmetic' averages the probabilities; 'geometric'
    averages their logarithms and renormalises over classes, so a class must
    be likely at every size to stay likely.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    if size is None:
        size = max((m.shape[1:] for m in maps), key=lambda s: s[0] * s[1])
    resized = [nd.contrib.BilinearResize2D(m.expand_dims(0), height=size[0],
                                           width=size[1], align_corners=False)[0]
               for m in maps]                         # each (C, h, w)
    stacked = nd.stack(*resized)                      # (sizes, C, h, w)
    if how == 'arithmetic':
        return stacked.mean(axis=0)
    if how == 'geometric':
        logs = nd.log(nd.maximum(stacked, 1e-12))     # 0 would be log(0) = -inf
        return stable_softmax(logs.mean(axis=0), axis=0)  # exp, renormalised
    raise ValueError(f"how must be 'arithmetic' or 'geometric', not {how!r}")


def plot_heatmaps(img, maps, sizes, rows, combined=None, title=None):
    """Draw heatmaps over the image: one row per class or group, one column per map.

    `rows` lists (label, class indices): a row shows the probability of its
    class, or the summed probability of its group (`group_heatmap`).
    `combined` is an optional dict {name: (C, h, w) map}, such as the
    arithmetic and geometric combinations. Returns the Figure.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    columns = [(f'{s} px:\n{m.shape[1]} x {m.shape[2]} cells', m) for s, m in zip(sizes, maps)]
    columns += list((combined or {}).items())
    img = np.asarray(img)
    h, w = img.shape[:2]
    from matplotlib import pyplot as plt
    side = 1.35                          # inches per panel: 7-8 inches fit a book page
    fig, axes = plt.subplots(len(rows), len(columns), squeeze=False, layout='constrained',
                             figsize=(side * len(columns) + 1.4,
                                      side * len(rows) * h / w + 1.0))
    for r, (label, ids) in enumerate(rows):
        axes[r, 0].set_ylabel(textwrap.fill(label, 16), fontsize=9)
        for k, (name, m) in enumerate(columns):
            ax = axes[r, k]
            ax.imshow(img)
            heat = to_numpy(group_heatmap(m, ids))
            # extent stretches the map over the image: cells are 32 input pixels
            # apart, so each is drawn as a 32-pixel square (it sees far more).
            shown = ax.imshow(heat, cmap='jet', alpha=0.55, vmin=0, vmax=1,
                              extent=(0, w, h, 0), interpolation='nearest')
            if r == 0:
                ax.set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(shown, ax=axes, shrink=min(1.0, 2.5 / len(rows)), aspect=25)
    bar.set_label('probability (of a group: the sum)', fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if title:
        fig.suptitle(textwrap.fill(title, 16 * len(columns)), fontsize=9)
    return fig


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
    features, labels = read_voc_images(voc_dir, is_train, max_images=50)
    colormap2label = voc_colormap2label().asnumpy()
    best = None
    for feature, label in zip(features, labels):
        ids = _class_ids(label, colormap2label)               # (H, W)
        names = [VOC_CLASSES[c] for c in np.unique(ids)]
        if best is None or len(names) > len(best[2]):
            best = (feature.asnumpy(), ids, names)
        if len(names) > min_classes and min(ids.shape) >= min_side:
            return feature.asnumpy(), ids, names
    return best


def _row_label(name, ids, classes):
    """Name a heatmap row: a class, or a group with its members."""
    if len(ids) == 1 and classes[ids[0]] == name:
        return name
    if len(ids) <= 3:
        return f'{name} = ' + ' + '.join(classes[i] for i in ids)
    return f'{name} ({len(ids)} classes)'


def heatmap_figure(classifier, img, sizes, class_names=None, top=3, groups=()):
    """Compute heatmaps of `img` at `sizes`, combine them, and plot classes and groups.

    `class_names` are names from `classifier.classes`; by default the `top`
    classes of the arithmetic combination, averaged over the image. `groups`
    names groups of `class_groups(classifier.classes)`, each drawn as one
    more row. Returns the Figure.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    fcn = to_fully_convolutional(classifier.net)
    maps = class_heatmaps(fcn, img, sizes)
    combined = {'arithmetic mean': combine_heatmaps(maps, 'arithmetic'),
                'geometric mean': combine_heatmaps(maps, 'geometric')}
    if class_names is None:
        overall = combined['arithmetic mean'].mean(axis=(1, 2)).asnumpy()  # (C,)
        class_ids = [int(i) for i in np.argsort(-overall)[:top]]
    else:
        class_ids = [classifier.classes.index(name) for name in class_names]
    known = class_groups(classifier.classes)
    rows = [(classifier.classes[i], [i]) for i in class_ids]
    rows += [(_row_label(g, known[g], classifier.classes), known[g]) for g in groups]
    return plot_heatmaps(img, maps, sizes, rows, combined, title=classifier.summary)


# --- The stand-in as a pretrained backbone, trained once and cached on disk ---
# (chapters/fcn.md trains an FCN from it; get_classifier reuses the same file).

__all__ += ['standin_classifier_file']

_STANDIN_VERSION = 1  # bump when train_standin_classifier learns differently
_STANDIN_SIGNATURE = inspect.signature(train_standin_classifier)  # its defaults


def _standin_key(voc_dir, standin_kwargs):
    """Return (file stem, description) of the stand-in these arguments train."""
    bound = _STANDIN_SIGNATURE.bind(voc_dir, **standin_kwargs)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k not in ('voc_dir', 'verbose')}
    # A generated set is named by its parameters, any other folder by its path.
    from .synthetic import _read_params
    dataset = _read_params(voc_dir) or os.path.realpath(voc_dir)
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
    from .synthetic import demo_voc_dir
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
