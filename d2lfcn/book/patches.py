"""Cut square patches of objects from a segmentation dataset, labelled with the stand-in's classes.

Explained in chapters/fully-convolutional-classifier.md.
"""
import cv2
import numpy as np
from mxnet import nd

from ..synthetic import SYNTHETIC_CLASSES
from ..utils import UserError
from ..voc import VOC_CLASSES, normalize_image
from ..voc import voc_examples

__all__ = ['STANDIN_CLASSES', 'object_patches']


# The stand-in's classes: background plus the embedded dataset's objects.
STANDIN_CLASSES = ['background'] + [VOC_CLASSES[c] for c in SYNTHETIC_CLASSES]


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
    index = {voc_id: i for i, voc_id in enumerate([0] + list(SYNTHETIC_CLASSES))}
    patches, targets = [], []
    for img, ids in voc_examples(voc_dir, is_train, max_images, boundary='background'):
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
