"""Read Pascal VOC2012's segmentation layout: its files, labels and colours, as D2L does.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import os
import random
import stat

import numpy as np
from mxnet import nd

from .download import download, safe_extract
from .image import check_image, read_image, read_label_png
from .segdata import SegDataset, segmentation_loaders
from .segmaps import IGNORE_LABEL, RGB_MEAN, RGB_STD, normalize_array, voc_palette
from .utils import Arg, UserError, default_data_dir, read_text

__all__ = ['VOC_CLASSES', 'VOC_COLORMAP', 'VOC_VOID_COLOR', 'IGNORE_LABEL',
           'RGB_MEAN', 'RGB_STD', 'VOC_TAR', 'VOC_SHA1', 'voc_palette', 'voc_urls',
           'download_voc2012', 'find_voc_dir', 'voc_split_names', 'voc_example_paths',
           'read_voc_images', 'voc_examples', 'read_voc_label',
           'voc_colormap2label', 'voc_label_indices', 'voc_rand_crop',
           'normalize_image', 'VOCSegDataset', 'load_data_voc']

VOC_CLASSES = ['background', 'aeroplane', 'bicycle', 'bird', 'boat',
               'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person',
               'potted plant', 'sheep', 'sofa', 'train', 'tv/monitor']

VOC_COLORMAP = [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0],
                [0, 0, 128], [128, 0, 128], [0, 128, 128], [128, 128, 128],
                [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0],
                [64, 0, 128], [192, 0, 128], [64, 128, 128], [192, 128, 128],
                [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0],
                [0, 64, 128]]

VOC_VOID_COLOR = [224, 224, 192]  # palette entry 255: the band around objects

VOC_TAR = 'VOCtrainval_11-May-2012.tar'
VOC_SHA1 = '4e443f8a2eca6b1dac8a6c57641b67dd40621a49'
_VOC_BASE_URLS = ('http://d2l-data.s3-accelerate.amazonaws.com/',
                  'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/')


def voc_urls():
    """Return the URLs to try for VOC2012, honouring $D2LFCN_VOC_URL.

    $D2LFCN_VOC_URL is either a full URL ending in `.tar`, or a base URL to
    which `VOCtrainval_11-May-2012.tar` is appended; it replaces both mirrors.
    """
    env = os.environ.get('D2LFCN_VOC_URL')
    if env:
        return [env if env.endswith('.tar') else env.rstrip('/') + '/' + VOC_TAR]
    return [base + VOC_TAR for base in _VOC_BASE_URLS]


def download_voc2012(data_dir=None):
    """Download and extract VOC2012 into `data_dir`; return its VOCdevkit/VOC2012.

    `data_dir` defaults to `default_data_dir()`. Nothing touches the network
    when the folder (or the verified tar) is already there. The tar comes from
    D2L's mirror, else from the official host (see `voc_urls`), resumes an
    interrupted download, is checked against `VOC_SHA1`, and is extracted
    safely and atomically.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    data_dir = default_data_dir() if data_dir is None else os.fspath(data_dir)
    voc_dir = os.path.join(data_dir, 'VOCdevkit', 'VOC2012')
    if os.path.isdir(voc_dir):  # extraction renames into place only when complete
        return voc_dir
    tar = download(voc_urls(), os.path.join(data_dir, VOC_TAR), sha1=VOC_SHA1)
    return safe_extract(tar, voc_dir, member_root=os.path.join('VOCdevkit', 'VOC2012'))


def find_voc_dir(path):
    """Return the VOC2012 folder at `path`, or below it in VOCdevkit/VOC2012.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    path = os.fspath(path)
    denied = None
    for cand in (path, os.path.join(path, 'VOC2012'),
                 os.path.join(path, 'VOCdevkit', 'VOC2012')):
        try:
            if stat.S_ISDIR(os.stat(os.path.join(cand, 'ImageSets', 'Segmentation')).st_mode):
                return cand
        except PermissionError as e:  # isdir() would say "no", hiding why
            denied = denied or e
        except OSError:
            pass
    if denied is not None:
        raise UserError(f'{path}: permission denied looking for VOC2012 data in it '
                        f'({denied.filename}); make it and its subfolders readable')
    raise UserError(f'{path}: no VOC2012 data here (no ImageSets/Segmentation); '
                    'point {data_dir} at the folder holding VOCdevkit/VOC2012, '
                    'download it with d2lfcn.download_voc2012(), or use {demo}',
                    data_dir=Arg('data_dir'), demo=Arg('demo', True))


def voc_split_names(voc_dir, is_train):
    """Return the image names listed in train.txt or val.txt, and that file's path.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    fname = os.path.join(voc_dir, 'ImageSets', 'Segmentation',
                         'train.txt' if is_train else 'val.txt')
    names = read_text(fname, 'split file', 'list one image name per line').split()
    if not names:
        raise UserError(f'{fname}: split file lists no images')
    for name in names:
        # A name is a file name without extension; '../x' or '/x' would read
        # files outside JPEGImages and SegmentationClass.
        parts = name.replace('\\', '/').split('/')
        if os.path.isabs(name) or name.startswith(('/', '\\')) or '..' in parts:
            raise UserError(f'{fname}: image name {name!r} leads outside JPEGImages and '
                            'SegmentationClass; list names like 2007_000032, one per line')
    return names, fname


def voc_example_paths(voc_dir, name):
    """Return the (JPEG image, label PNG) paths of the example `name`."""
    return (os.path.join(voc_dir, 'JPEGImages', f'{name}.jpg'),
            os.path.join(voc_dir, 'SegmentationClass', f'{name}.png'))


def _require(fname, missing):
    """Raise `UserError(missing)` if `fname` does not exist."""
    try:
        os.stat(fname)
    except FileNotFoundError:
        raise UserError(missing) from None
    except OSError:
        pass  # e.g. permission denied: reading the file will say so


def _rgb_to_classes(rgb, fname):
    """Map an (H, W, 3) VOC colour label to class ids, void colour to 255."""
    colors = np.array(VOC_COLORMAP + [VOC_VOID_COLOR], dtype=np.int64)
    ids = np.array(list(range(len(VOC_COLORMAP))) + [IGNORE_LABEL], dtype=np.uint8)
    codes = (colors[:, 0] * 256 + colors[:, 1]) * 256 + colors[:, 2]
    order = np.argsort(codes)
    codes, ids = codes[order], ids[order]
    rgb = rgb.astype(np.int64)
    pix = (rgb[..., 0] * 256 + rgb[..., 1]) * 256 + rgb[..., 2]
    pos = np.clip(np.searchsorted(codes, pix), 0, len(codes) - 1)
    bad = codes[pos] != pix
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise UserError(f'{fname}: colour {tuple(rgb[y, x])} at ({y}, {x}) is not a '
                        'VOC class colour')
    return ids[pos]


def read_voc_label(fname):
    """Return a label PNG as (H, W) uint8 class ids, 255 on void pixels.

    VOC's PNGs are palette images whose pixel values are the class ids, so we
    read them directly (exact, fast); RGB colour labels are decoded by colour.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    label = read_label_png(fname)
    if label.ndim == 3:
        return _rgb_to_classes(label, fname)
    return label


def _check_label_values(label, fname):
    counts = np.bincount(label.ravel(), minlength=256)
    counts[:len(VOC_CLASSES)] = 0
    counts[IGNORE_LABEL] = 0
    if counts.any():
        raise UserError(f'{fname}: label value {int(np.flatnonzero(counts)[0])} is '
                        f'neither a class id 0..{len(VOC_CLASSES) - 1} nor 255 (void)')


def _jpeg_size(fname, split):
    """Return (height, width) of an image after decoding it once; refuse damaged files."""
    _require(fname, f'{fname}: image listed in {split} is missing')
    # Decoding every image here (at 1/8 scale: about 1 ms for VOC's) finds a
    # corrupt one before training writes anything, not an epoch into it.
    return check_image(fname)


def _check_example(voc_dir, name, split):
    """Validate one listed example cheaply; return (jpg, png, height, width)."""
    jpg, png = voc_example_paths(voc_dir, name)
    height, width = _jpeg_size(jpg, split)
    _require(png, f'{png}: label PNG for {name} listed in {split} is missing')
    label = read_voc_label(png)
    if label.shape != (height, width):
        raise UserError(f'{png}: label is {label.shape[1]}x{label.shape[0]} but its '
                        f'image {jpg} is {width}x{height}')
    _check_label_values(label, png)
    return jpg, png, height, width


def read_voc_images(voc_dir, is_train=True, max_images=None):
    """Read VOC images and their colour labels as D2L does.

    Returns (features, labels): lists of (H, W, 3) uint8 NDArrays; labels are
    RGB colour images (palette colours), as `mx.image.imread` gives in D2L.
    `max_images` reads only the first few (handy for showing examples).

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    voc_dir = find_voc_dir(voc_dir)
    names, split = voc_split_names(voc_dir, is_train)
    palette = voc_palette()
    features, labels = [], []
    for name in names[:max_images]:
        jpg, png = voc_example_paths(voc_dir, name)
        _require(jpg, f'{jpg}: image listed in {split} is missing')
        features.append(nd.array(read_image(jpg), dtype='uint8'))
        labels.append(nd.array(palette[read_voc_label(png)], dtype='uint8'))
    return features, labels


def voc_examples(voc_dir, is_train=True, max_images=None, boundary='ignore'):
    """Yield (image, label) of a split's first `max_images` examples as uint8 arrays.

    The image is (H, W, 3) RGB; the label (H, W) holds class ids, read from
    the label file directly (`read_voc_images` gives D2L's colours instead).
    As in `VOCSegDataset`, boundary='ignore' keeps void pixels 255 and
    'background' makes them 0, as D2L's colour decoding does.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    if boundary not in ('ignore', 'background'):
        raise ValueError(f"boundary must be 'ignore' or 'background', not {boundary!r}")
    voc_dir = find_voc_dir(voc_dir)
    names, split = voc_split_names(voc_dir, is_train)
    for name in names[:max_images]:
        jpg, png = voc_example_paths(voc_dir, name)
        _require(jpg, f'{jpg}: image listed in {split} is missing')
        label = read_voc_label(png)
        if boundary == 'background':
            label = np.where(label == IGNORE_LABEL, 0, label)
        yield read_image(jpg), label

def voc_colormap2label():
    """Build the lookup from an RGB colour code to its VOC class id (as D2L).

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    colormap2label = nd.zeros(256 ** 3)
    for i, colormap in enumerate(VOC_COLORMAP):
        colormap2label[(colormap[0] * 256 + colormap[1]) * 256 + colormap[2]] = i
    return colormap2label


def voc_label_indices(colormap, colormap2label):
    """Map the RGB colours of a VOC label image to class ids (as D2L).

    Any colour outside VOC_COLORMAP, including the void colour, becomes 0.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    colormap = colormap.astype('int32')
    idx = ((colormap[:, :, 0] * 256 + colormap[:, :, 1]) * 256
           + colormap[:, :, 2])
    return colormap2label[idx]


def voc_rand_crop(feature, label, height, width):
    """Randomly crop both feature and label images to the same height x width window.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    h, w = feature.shape[:2]
    if h < height or w < width:
        raise ValueError(f'image {w}x{h} is smaller than the crop {width}x{height}')
    y, x = random.randint(0, h - height), random.randint(0, w - width)
    return (feature[y:y + height, x:x + width],
            label[y:y + height, x:x + width])


def normalize_image(img):
    """Scale an (H, W, 3) RGB uint8 image to [0, 1] and standardise with ImageNet stats.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    if isinstance(img, nd.NDArray):
        img = img.asnumpy()
    return nd.array(normalize_array(img))  # (H, W, 3)


class VOCSegDataset(SegDataset):
    """A customized dataset to load the VOC dataset.

    Parameters
    ----------
    is_train : bool
        True reads train.txt with random crops; False reads val.txt with
        centred crops (D2L crops its test set at random; ours is deterministic).
    crop_size : (int, int) or int or None
        (height, width) of every example; smaller images are dropped, as in D2L.
        None keeps every image whole (for whole-image evaluation).
    voc_dir : str
        The VOC2012 folder (or a folder holding VOCdevkit/VOC2012).
    boundary : {'ignore', 'background'}
        'ignore' keeps void pixels as 255 for the loss and metrics to skip;
        'background' turns them into 0, exactly as D2L's colour decoding does.

    Items are (feature, label): a (3, h, w) float32 NDArray normalised with
    ImageNet mean/std and an (h, w) float32 NDArray of class ids (see
    `SegDataset`, which decodes and crops them).
    Explained in chapters/semantic-segmentation-and-dataset.md.
    """

    def __init__(self, is_train, crop_size, voc_dir, boundary='ignore'):
        voc_dir = find_voc_dir(voc_dir)
        names, split = voc_split_names(voc_dir, is_train)
        examples = [_check_example(voc_dir, name, split) for name in names]
        super().__init__(examples, is_train, crop_size, read_voc_label, VOC_CLASSES,
                         boundary, split)

    def normalize_image(self, img):
        """Normalise an (H, W, 3) RGB uint8 image as the dataset does."""
        return normalize_image(img)


def load_data_voc(batch_size, crop_size, voc_dir=None, boundary='ignore',
                  num_workers=None, num_parts=1, part_index=0):
    """Load the VOC semantic segmentation dataset.

    Parameters
    ----------
    batch_size : int
    crop_size : (int, int) or int
        (height, width) of the crops, e.g. (320, 480) as in D2L.
    voc_dir : str, optional
        The VOC2012 folder; None downloads VOC2012 into `default_data_dir()`.
    boundary : {'ignore', 'background'}
        See `VOCSegDataset`.
    num_workers : int, optional
        DataLoader worker processes; None uses `get_dataloader_workers()`.
    num_parts, part_index : int
        This worker's shard of both sets, for distributed training (see
        `segmentation_loaders`): every worker gets the same number of training batches.

    Returns (train_iter, test_iter): gluon DataLoaders; train is shuffled with
    random crops, test is in file order with centred crops (identical each pass).
    Train drops the last incomplete batch, as D2L does; test keeps it. With num_workers > 0
    batches arrive in shared memory (cpu_shared); move them with
    `as_in_context` before feeding a hybridized network.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    if voc_dir is None:
        voc_dir = download_voc2012(default_data_dir())
    train_set = VOCSegDataset(True, crop_size, voc_dir, boundary)
    test_set = VOCSegDataset(False, crop_size, voc_dir, boundary)
    return segmentation_loaders(train_set, test_set, batch_size, num_workers,
                                num_parts, part_index)
