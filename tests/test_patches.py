"""Test d2lfcn.book.patches: square patches of a segmentation dataset's objects.

References: PIL's reading of the label PNGs.
"""
import os

import numpy as np
from PIL import Image

from d2lfcn.book import patches
from d2lfcn.synthetic import SYNTHETIC_CLASSES


def pil_class_counts(voc_dir, split, min_pixels):
    """Objects and background windows per image, from the PNGs via PIL."""
    with open(os.path.join(voc_dir, 'ImageSets', 'Segmentation', split + '.txt')) as f:
        names = f.read().split()
    objects = 0
    for name in names:
        y = np.array(Image.open(os.path.join(voc_dir, 'SegmentationClass', name + '.png')))
        y[y == 255] = 0
        counts = np.bincount(y.ravel(), minlength=21)
        objects += sum(counts[c] >= min_pixels for c in SYNTHETIC_CLASSES)
    return objects, len(names)


def test_object_patches_one_per_object_class(small_voc_dir):
    X, y = patches.object_patches(small_voc_dir, True, size=32, min_pixels=150)
    y = y.asnumpy().astype(int)
    objects, images = pil_class_counts(small_voc_dir, 'train', 150)
    assert (y > 0).sum() == objects
    assert 0 < (y == 0).sum() <= images            # at most one background window each
    assert X.shape == (len(y), 3, 32, 32)
    assert set(y) <= set(range(len(patches.STANDIN_CLASSES)))
