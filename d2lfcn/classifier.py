"""Turn a classifier into a fully convolutional network of class heatmaps.

Explained in chapters/fully-convolutional-classifier.md.
"""
import os

import cv2
import mxnet as mx
import numpy as np
from mxnet import nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import vision

from .conv import dense_to_conv1x1
from .model import STRIDE, backbone_file
from .voc import normalize_image

__all__ = ['imagenet_classes', 'pretrained_classifier', 'to_fully_convolutional',
           'resize_to_multiple', 'stable_softmax', 'class_heatmaps', 'VOC_GROUPS',
           'IMAGENET_DOGS', 'class_groups', 'group_heatmap', 'groups_found',
           'combine_heatmaps']


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
    """Return a network computing `classifier`'s class scores everywhere.

    The Dense layer becomes a 1x1 convolution with the same weights, and
    the global average pooling and flatten go; the features are shared,
    not copied. Maps (N, 3, H, W) to (N, classes, H/32, W/32) for a
    resnet18_v2. Explained in chapters/fully-convolutional-classifier.md.
    """
    net = nn.HybridSequential(prefix='')
    net.add(*classifier.features[:-2])            # (N, 512, H/32, W/32)
    net.add(dense_to_conv1x1(classifier.output))  # (N, classes, H/32, W/32)
    return net


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

    exp(s - max) lies in (0, 1], so nothing overflows, and the largest term
    is 1, so the sum cannot underflow to 0; the result is exp(s) / sum exp(s).
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
        # Resized so that each side is a multiple of 32: (32h, 32w, 3).
        x = normalize_image(resize_to_multiple(img, short_side))
        X = x.transpose((2, 0, 1)).expand_dims(0).as_in_context(ctx)
        maps.append(stable_softmax(fcn(X))[0])  # (C, h, w), sums to 1 over C
    return maps


# The VOC2012 devkit's four top-level categories of its 20 object classes.
VOC_GROUPS = {
    'person': ['person'],
    'animal': ['bird', 'cat', 'cow', 'dog', 'horse', 'sheep'],
    'vehicle': ['aeroplane', 'bicycle', 'boat', 'bus', 'car', 'motorbike', 'train'],
    'indoor': ['bottle', 'chair', 'diningtable', 'potted plant', 'sofa', 'tv/monitor'],
}
# ImageNet-1k's 118 dog breeds, 'Chihuahua' (151) to 'Mexican hairless' (268):
# the classes under WordNet's synset n02084071 ('dog'), which are neighbours
# in the model zoo's order (by WordNet id). Fixed here: WordNet is a download.
IMAGENET_DOGS = range(151, 269)


def class_groups(classes):
    """Return {group name: indices into `classes`} of the groups with members there.

    1000 classes are taken to be ImageNet-1k's, in the model zoo's order: they
    give the group 'dog' of its 118 breeds (IMAGENET_DOGS). Other classes are
    grouped by VOC_GROUPS. Explained in chapters/fully-convolutional-classifier.md.
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


def groups_found(probs, groups, threshold=0.5):
    """Return the names of `groups` of several classes found in (C, h, w) `probs`.

    A group is found where its probability exceeds `threshold` at some
    position; groups of one class are left out (they are classes).
    Explained in chapters/fully-convolutional-classifier.md.
    """
    return [name for name, ids in groups.items() if len(ids) > 1 and
            group_heatmap(probs, ids).max().asscalar() > threshold]


def combine_heatmaps(maps, how='arithmetic', size=None):
    """Combine class-probability maps of several sizes into one (C, h, w) map.

    Each map is resized bilinearly (pixel centres aligned) to `size`
    (default: the largest map's). 'arithmetic' averages the probabilities;
    'geometric' averages their logarithms and renormalises over classes, so
    a class must be likely at every size to stay likely.
    Explained in chapters/fully-convolutional-classifier.md.
    """
    if size is None:
        size = max((m.shape[1:] for m in maps), key=lambda s: s[0] * s[1])
    resized = [nd.contrib.BilinearResize2D(
        m.expand_dims(0), height=size[0], width=size[1],
        align_corners=False)[0] for m in maps]        # each (C, h, w)
    stacked = nd.stack(*resized)                      # (sizes, C, h, w)
    if how == 'arithmetic':
        return stacked.mean(axis=0)
    if how == 'geometric':
        logs = nd.log(nd.maximum(stacked, 1e-12))     # log(0) would be -inf
        return stable_softmax(logs.mean(axis=0), axis=0)  # exp, renormalised
    raise ValueError(f"how must be 'arithmetic' or 'geometric', not {how!r}")
