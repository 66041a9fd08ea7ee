"""Read your own segmentation dataset: a folder of images, single-channel masks and class names.

The layout, next to VOC's (`voc`)::

    PATH/images/NAME.jpg (or .jpeg, .png)
    PATH/masks/NAME.png       one class index per pixel (a grey or palette PNG), 255 = void
    PATH/classes.txt          one class name per line, background first
    PATH/train.txt, val.txt   optional: the image names of each split, one per line

Without train.txt and val.txt, a seeded 80/20 split of the sorted names is
made; `python -m d2lfcn.train` records it in the run folder. Masks in RGB
colours are refused with a hint: save the class indices themselves.
Explained in chapters/training-at-scale.md.
"""
import os

import numpy as np

from .image import check_image, read_label_png
from .segdata import SegDataset
from .segmaps import IGNORE_LABEL
from .utils import UserError, read_text

__all__ = ['CLASSES_FILE', 'is_mask_folder', 'read_classes', 'mask_folder_split',
           'read_mask', 'FolderSegDataset']

CLASSES_FILE = 'classes.txt'
_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
VAL_FRACTION = 0.2


def is_mask_folder(path):
    """Return True if `path` holds a dataset in this layout (it has a classes.txt)."""
    return os.path.isfile(os.path.join(path, CLASSES_FILE))


def _read_lines(path):
    """Return the lines of a UTF-8 text file, or raise UserError naming it."""
    return read_text(path, 'it', 'save it as UTF-8 text, one entry per line').splitlines()


def read_classes(folder):
    """Return the class names in `folder`'s classes.txt, background first.

    Explained in chapters/training-at-scale.md.
    """
    path = os.path.join(folder, CLASSES_FILE)
    lines = _read_lines(path)
    while lines and not lines[-1].strip():  # a trailing blank line is no class
        lines.pop()
    names, seen = [name.strip() for name in lines], {}
    for number, name in enumerate(names, 1):
        if not name:
            raise UserError(f'{path}, line {number}: empty class name; write one name '
                            'per line, background first')
        if name in seen:
            raise UserError(f'{path}, line {number}: class {name!r} again (first on line '
                            f'{seen[name]}); class names must differ')
        seen[name] = number
    if not 2 <= len(names) <= IGNORE_LABEL:
        raise UserError(f'{path}: {len(names)} classes; name between 2 (background and '
                        f'one object class) and {IGNORE_LABEL}, one per line')
    return names


def _files(folder, sub, extensions):
    """Return {name: file} of the files in folder/sub with one of `extensions`."""
    where = os.path.join(folder, sub)
    try:
        entries = sorted(os.listdir(where))
    except OSError as e:
        raise UserError(f'{where}: cannot list it ({e.strerror}); a dataset folder holds '
                        f'images/, masks/ and {CLASSES_FILE}') from None
    found = {}
    for entry in entries:
        name, ext = os.path.splitext(entry)
        if ext.lower() not in extensions:
            continue
        if name in found:
            raise UserError(f'{os.path.join(where, entry)}: a second file for {name!r} '
                            f'(besides {found[name]}); keep one')
        found[name] = os.path.join(where, entry)
    return found


def _pairs(folder):
    """Return {name: (image, mask)}; refuse an image without a mask or a mask without an image."""
    images = _files(folder, 'images', _IMAGE_EXTENSIONS)
    masks = _files(folder, 'masks', ('.png',))
    for name in sorted(set(images) ^ set(masks)):
        if name in images:
            raise UserError(f'{images[name]}: no mask for it (expected '
                            f'{os.path.join(folder, "masks", name + ".png")})')
        raise UserError(f'{masks[name]}: no image for it (expected '
                        f'{os.path.join(folder, "images", name)}.jpg or .png)')
    if not images:
        raise UserError(f'{os.path.join(folder, "images")}: no .jpg or .png images')
    return {name: (images[name], masks[name]) for name in images}


def mask_folder_split(folder, seed=0):
    """Return (train names, val names, made): train.txt and val.txt, or a seeded 80/20 split.

    `made` is True when the split was drawn here (from `seed`), so the caller
    can record it. Explained in chapters/training-at-scale.md.
    """
    pairs = _pairs(folder)
    listed = [os.path.join(folder, f'{split}.txt') for split in ('train', 'val')]
    present = [os.path.isfile(path) for path in listed]
    if any(present) and not all(present):
        have, missing = (listed[0], listed[1]) if present[0] else (listed[1], listed[0])
        raise UserError(f'{have} without {missing}: list both splits, or neither for an '
                        f'{100 - round(100 * VAL_FRACTION)}/{round(100 * VAL_FRACTION)} '
                        'split')
    if all(present):
        splits = [[n.strip() for n in _read_lines(path) if n.strip()] for path in listed]
        for path, names in zip(listed, splits):
            unknown = [n for n in names if n not in pairs]
            if unknown or not names:
                what = f'names {unknown[0]!r}, which images/ does not hold' if unknown \
                    else 'no image'
                raise UserError(f'{path}: {what}; list image names without extension, '
                                'one per line')
        return splits[0], splits[1], False
    names = sorted(pairs)
    if len(names) < 2:
        raise UserError(f'{os.path.join(folder, "images")}: {len(names)} image; a training '
                        'and a validation split need at least 2')
    order = np.random.default_rng(seed).permutation(len(names))
    num_val = min(max(1, round(VAL_FRACTION * len(names))), len(names) - 1)
    val = sorted(names[i] for i in order[:num_val])
    train = sorted(names[i] for i in order[num_val:])
    return train, val, True


def _mask_ids(path):
    """Read a mask as (H, W) uint8 class indices; refuse colour masks with a hint."""
    mask = read_label_png(path, what='mask')
    if mask.ndim == 3:
        raise UserError(f'{path}: an RGB mask; save masks as single-channel PNGs of class '
                        'indices (grey or palette), e.g. '
                        'PIL.Image.fromarray(ids.astype("uint8")).save(...)')
    return mask


def read_mask(path, num_classes):
    """Return a mask as (H, W) uint8 class ids, refusing ids >= `num_classes` other than 255.

    Explained in chapters/training-at-scale.md.
    """
    mask = _mask_ids(path)
    counts = np.bincount(mask.ravel(), minlength=256)
    counts[:num_classes] = 0
    counts[IGNORE_LABEL] = 0
    if counts.any():
        raise UserError(f'{path}: mask value {int(np.flatnonzero(counts)[0])} is neither a '
                        f'class index 0..{num_classes - 1} (classes.txt names '
                        f'{num_classes}) nor 255 (void)')
    return mask


def _check_example(image, mask, num_classes):
    """Validate one example; return (image, mask, height, width)."""
    height, width = check_image(image)
    ids = read_mask(mask, num_classes)
    if ids.shape != (height, width):
        raise UserError(f'{mask}: mask is {ids.shape[1]}x{ids.shape[0]} but its image '
                        f'{image} is {width}x{height}')
    return image, mask, height, width


class FolderSegDataset(SegDataset):
    """Load a dataset in the plain folder layout (images/, masks/, classes.txt).

    Parameters are those of `VOCSegDataset`, with `folder` for `voc_dir`, and
    `split`: (train names, val names) to use instead of the folder's own
    (for a run that recorded its split). Items are (feature, label), as
    `SegDataset` makes them; `classes` holds the names from classes.txt.
    Explained in chapters/training-at-scale.md.
    """

    def __init__(self, is_train, crop_size, folder, boundary='ignore', split=None):
        folder = os.fspath(folder)
        classes = read_classes(folder)
        pairs = _pairs(folder)
        train, val = split or mask_folder_split(folder)[:2]
        names = train if is_train else val
        missing = [n for n in names if n not in pairs]
        if missing:
            raise UserError(f'{os.path.join(folder, "images")}: no image {missing[0]!r}, '
                            'which the recorded split names; start afresh')
        examples = [_check_example(*pairs[name], len(classes)) for name in names]
        super().__init__(examples, is_train, crop_size, _mask_ids, classes, boundary,
                         f"{folder}'s {'training' if is_train else 'validation'} split")
