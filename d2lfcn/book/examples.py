"""Read a segmentation dataset's examples as arrays: each image with its label's class ids.

`read_voc_images` gives D2L's colour labels; the book's data figures and
its stand-in classifier want class ids, which `read_voc_label` reads from
the label files directly. Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import numpy as np

from ..image import read_image
# voc.py lists a split and names its files; it has no public reader of whole
# examples by class id, so these private helpers keep one copy of that logic.
from ..voc import (IGNORE_LABEL, _example_paths, _require, _split_names, find_voc_dir,
                   read_voc_label)

__all__ = ['voc_examples']


def voc_examples(voc_dir, is_train=True, max_images=None, boundary='ignore'):
    """Yield (image, label) of a split's first `max_images` examples as uint8 arrays.

    The image is (H, W, 3) RGB; the label (H, W) holds class ids. As in
    `VOCSegDataset`, boundary='ignore' keeps void pixels 255 and
    'background' makes them 0, as D2L's colour decoding does.
    """
    if boundary not in ('ignore', 'background'):
        raise ValueError(f"boundary must be 'ignore' or 'background', not {boundary!r}")
    voc_dir = find_voc_dir(voc_dir)
    names, split = _split_names(voc_dir, is_train)
    for name in names[:max_images]:
        jpg, png = _example_paths(voc_dir, name)
        _require(jpg, f'{jpg}: image listed in {split} is missing')
        label = read_voc_label(png)
        if boundary == 'background':
            label = np.where(label == IGNORE_LABEL, 0, label)
        yield read_image(jpg), label
