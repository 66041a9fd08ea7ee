"""Test d2lfcn.book.examples: a split's examples as images and class ids.

References: PIL's reading of the JPEGs and of the label PNGs' palette indices.
"""
import os

import numpy as np
import pytest
from PIL import Image

from d2lfcn.book.examples import voc_examples


def pil_example(voc_dir, name):
    image = np.array(Image.open(os.path.join(voc_dir, 'JPEGImages', name + '.jpg')))
    label = np.array(Image.open(os.path.join(voc_dir, 'SegmentationClass', name + '.png')))
    return image, label


def test_examples_are_the_listed_files_in_order(small_voc_dir):
    with open(os.path.join(small_voc_dir, 'ImageSets', 'Segmentation', 'val.txt')) as f:
        names = f.read().split()[:3]
    examples = list(voc_examples(small_voc_dir, is_train=False, max_images=3))
    assert len(examples) == 3
    for name, (image, label) in zip(names, examples):
        ref_image, ref_label = pil_example(small_voc_dir, name)
        assert image.dtype == label.dtype == np.uint8
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(label, ref_label)


def test_boundary_background_turns_void_into_background(small_voc_dir):
    ignore = list(voc_examples(small_voc_dir, max_images=4))
    background = list(voc_examples(small_voc_dir, max_images=4, boundary='background'))
    assert any((label == 255).any() for _, label in ignore)  # the void band is there
    for (_, kept), (_, merged) in zip(ignore, background):
        np.testing.assert_array_equal(merged, np.where(kept == 255, 0, kept))
    with pytest.raises(ValueError, match='boundary'):
        next(voc_examples(small_voc_dir, boundary='void'))
