"""Read Pascal VOC2012 segmentation data: constants, labels, crops and loaders.

Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import copy
import itertools
import os
import random
import stat

import numpy as np
from mxnet import gluon, nd

from .download import download, safe_extract
from .image import check_image, read_image, read_label_png
from .utils import Arg, UserError, default_data_dir

__all__ = ['VOC_CLASSES', 'VOC_COLORMAP', 'VOC_VOID_COLOR', 'IGNORE_LABEL',
           'RGB_MEAN', 'RGB_STD', 'VOC_TAR', 'VOC_SHA1', 'voc_palette', 'voc_urls',
           'download_voc2012', 'find_voc_dir', 'voc_split_names', 'voc_example_paths',
           'read_voc_images', 'voc_examples', 'read_voc_label',
           'voc_colormap2label', 'voc_label_indices', 'voc_rand_crop',
           'normalize_image', 'VOCSegDataset', 'get_dataloader_workers',
           'load_data_voc', 'RandomCropSampler', 'ShardBatchSampler', 'voc_loaders']

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
IGNORE_LABEL = 255

# ImageNet statistics, which the pretrained ResNet backbone expects.
RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)

VOC_TAR = 'VOCtrainval_11-May-2012.tar'
VOC_SHA1 = '4e443f8a2eca6b1dac8a6c57641b67dd40621a49'
_VOC_BASE_URLS = ('http://d2l-data.s3-accelerate.amazonaws.com/',
                  'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/')


def voc_palette():
    """Return VOC's 256-entry palette as a (256, 3) uint8 array.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    # The devkit's colour map: the bits of the class id, spread over R, G, B.
    palette = np.zeros((256, 3), dtype=np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[i] = (r, g, b)
    return palette


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
    try:
        with open(fname, 'rb') as f:
            names = f.read().decode('utf-8-sig').split()  # -sig: Notepad's BOM
    except OSError as e:
        raise UserError(f'{fname}: cannot read split file ({e.strerror})') from None
    except UnicodeDecodeError as e:
        raise UserError(f'{fname}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at '
                        f'offset {e.start}); list one image name per line') from None
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


def _read_bgr(fname):
    """Decode an image file to (H, W, 3) uint8 BGR, or raise `UserError`."""
    return read_image(fname)[:, :, ::-1]


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


def _crop_origin(height, width, crop_h, crop_w, rand, rng=random):
    """Return the top-left corner of a random (rand=True) or centred crop."""
    if rand:
        return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w)
    return (height - crop_h) // 2, (width - crop_w) // 2


class RandomCropSampler(gluon.data.Sampler):
    """Shuffle example indices and draw each example's crop seed, in this process.

    Yields (index, seed) pairs for `VOCSegDataset`. DataLoader worker processes
    are forked with identical random states, so crops drawn inside them repeat
    across workers and ignore the seeds the training loop sets; drawing the
    seeds here makes crops depend only on NumPy's state in the main process.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """

    def __init__(self, length):
        self._length = length

    def __iter__(self):
        order = np.random.permutation(self._length)
        seeds = np.random.randint(0, 2 ** 31 - 1, size=self._length)
        return iter(zip(order.tolist(), seeds.tolist()))

    def __len__(self):
        return self._length


def voc_rand_crop(feature, label, height, width):
    """Randomly crop both feature and label images to the same height x width window.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    h, w = feature.shape[:2]
    if h < height or w < width:
        raise ValueError(f'image {w}x{h} is smaller than the crop {width}x{height}')
    y, x = _crop_origin(h, w, height, width, rand=True)
    return (feature[y:y + height, x:x + width],
            label[y:y + height, x:x + width])


def normalize_image(img):
    """Scale an (H, W, 3) RGB uint8 image to [0, 1] and standardise with ImageNet stats.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    if isinstance(img, nd.NDArray):
        img = img.asnumpy()
    img = np.asarray(img, dtype=np.float32) / 255
    return nd.array((img - np.array(RGB_MEAN, dtype=np.float32))
                    / np.array(RGB_STD, dtype=np.float32))  # (H, W, 3)


# Per channel in BGR order (OpenCV decodes BGR): x -> (x/255 - mean) / std.
_BGR_SHIFT = np.array(RGB_MEAN[::-1], dtype=np.float32) * 255
_BGR_SCALE = 1 / (np.array(RGB_STD[::-1], dtype=np.float32) * 255)


def _bgr_to_normalized_chw(bgr):
    """Return an (h, w, 3) uint8 BGR crop as a (3, h, w) normalised RGB float32 array."""
    out = np.empty((3,) + bgr.shape[:2], dtype=np.float32)  # (3, h, w)
    for c in range(3):  # one channel at a time: no (h, w, 3) float temporaries
        np.subtract(bgr[:, :, c], _BGR_SHIFT[c], out=out[2 - c], dtype=np.float32)
        out[2 - c] *= _BGR_SCALE[c]
    return out


class VOCSegDataset(gluon.data.Dataset):
    """A customized dataset to load the VOC dataset.

    Parameters
    ----------
    is_train : bool
        True reads train.txt with random crops; False reads val.txt with
        centred crops (D2L crops its test set at random; ours is deterministic).
    crop_size : (int, int) or int or None
        (height, width) of every example; smaller images are dropped, as in D2L.
        None keeps every image whole (for whole-image evaluation; items then
        differ in size, so load them one at a time).
    voc_dir : str
        The VOC2012 folder (or a folder holding VOCdevkit/VOC2012).
    boundary : {'ignore', 'background'}
        'ignore' keeps void pixels as 255 for the loss and metrics to skip;
        'background' turns them into 0, exactly as D2L's colour decoding does.

    Items are (feature, label): a (3, h, w) float32 NDArray normalised with
    ImageNet mean/std and an (h, w) float32 NDArray of class ids.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """

    def __init__(self, is_train, crop_size, voc_dir, boundary='ignore'):
        if boundary not in ('ignore', 'background'):
            raise ValueError(f"boundary must be 'ignore' or 'background', not {boundary!r}")
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.is_train = is_train
        self.crop_size = None if crop_size is None else tuple(int(s) for s in crop_size)
        self.boundary = boundary
        self.rgb_mean = nd.array(RGB_MEAN)
        self.rgb_std = nd.array(RGB_STD)
        voc_dir = find_voc_dir(voc_dir)
        names, split = voc_split_names(voc_dir, is_train)
        # d2lfcn keeps file names only and decodes per item: D2L holds every
        # image as float32 in RAM (about 5 GB for VOC train + val).
        examples = [_check_example(voc_dir, name, split) for name in names]
        self.examples = self.filter(examples)
        if not self.examples:
            raise UserError(f'{split}: every image is smaller than the crop '
                            f'{self.crop_size[0]}x{self.crop_size[1]} (height x width); '
                            'use a smaller crop size')
        what = ' examples' if self.crop_size else ' whole images'
        print('read ' + str(len(self.examples)) + what)

    def with_crop(self, crop_size):
        """Return this dataset with another crop size (smaller images dropped)."""
        other = copy.copy(self)
        other.crop_size = tuple(int(s) for s in crop_size)
        other.examples = other.filter(self.examples)
        if not other.examples:
            raise UserError(f'every image is smaller than the crop {crop_size[0]}x'
                            f'{crop_size[1]} (height x width); use a smaller crop size')
        print('read ' + str(len(other.examples)) + ' examples')
        return other

    def normalize_image(self, img):
        """Normalise an (H, W, 3) RGB uint8 image as the dataset does."""
        return normalize_image(img)

    def filter(self, examples):
        """Keep the examples at least as large as the crop."""
        if self.crop_size is None:
            return examples
        crop_h, crop_w = self.crop_size
        return [e for e in examples if e[2] >= crop_h and e[3] >= crop_w]

    def __getitem__(self, idx):
        # idx is an index, or (index, crop seed) from RandomCropSampler.
        rng = random
        if isinstance(idx, tuple):
            idx, seed = idx
            rng = random.Random(seed)
        jpg, png, height, width = self.examples[idx]
        crop_h, crop_w = self.crop_size or (height, width)
        y, x = _crop_origin(height, width, crop_h, crop_w, self.is_train, rng)
        bgr = _read_bgr(jpg)[y:y + crop_h, x:x + crop_w]         # (h, w, 3)
        label = read_voc_label(png)[y:y + crop_h, x:x + crop_w]  # (h, w)
        if self.boundary == 'background':
            label = np.where(label == IGNORE_LABEL, 0, label)
        return (nd.array(_bgr_to_normalized_chw(bgr)),           # (3, h, w)
                nd.array(label, dtype='float32'))                # (h, w)

    def __len__(self):
        return len(self.examples)


def get_dataloader_workers():
    """Return how many worker processes feed a DataLoader on this machine.

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    # Decoding a 500x375 JPEG and cropping takes a few ms, far less than a
    # training step needs per image; on 2 cores, worker processes only compete
    # with the network for the CPU (measured: benchmarks/bench_loader.py).
    return 0 if (os.cpu_count() or 1) <= 2 else 4


class ShardBatchSampler(gluon.data.Sampler):
    """Batch one worker's shard of the training set; note the indices it serves.

    The shard holds every num_parts-th example from part_index. Each epoch
    shuffles it and draws crop seeds with `RandomCropSampler` (in this
    process), and serves as many full batches as the smallest shard fills:
    distributed workers must all take the same number of steps, or they wait
    for each other forever. With one part it batches like D2L's loader
    (shuffled, last partial batch dropped).

    Explained in chapters/semantic-segmentation-and-dataset.md.
    """

    def __init__(self, num_examples, batch_size, num_parts=1, part_index=0):
        self._indices = list(range(part_index, num_examples, num_parts))
        self._sampler = RandomCropSampler(len(self._indices))
        self._batch_size = batch_size
        self._num_batches = num_examples // num_parts // batch_size
        self.served = []  # dataset indices of the current epoch, in order

    def __iter__(self):
        self.served = []
        pairs = iter(self._sampler)  # (index into the shard, crop seed)
        for _ in range(self._num_batches):
            batch = [(self._indices[i], seed)
                     for i, seed in itertools.islice(pairs, self._batch_size)]
            self.served.extend(i for i, _ in batch)
            yield batch

    def __len__(self):
        return self._num_batches


def voc_loaders(train_set, test_set, batch_size, num_workers=None, num_parts=1,
                part_index=0):
    """Return (train_iter, test_iter) over one worker's shards of the two datasets.

    The training loader serves `ShardBatchSampler` batches (every worker the
    same number); the test loader keeps its last partial batch. `train_iter`
    has a `batch_sampler` attribute whose `served` lists the indices of the
    current epoch. Explained in chapters/semantic-segmentation-and-dataset.md.
    """
    if num_workers is None:
        num_workers = get_dataloader_workers()
    batches = ShardBatchSampler(len(train_set), batch_size, num_parts, part_index)
    if not len(batches):
        each = f' for each of {num_parts} workers' if num_parts > 1 else ''
        raise UserError(f'{{arg}}: more than the {len(train_set) // num_parts} '
                        f'training images{each}; use a smaller one',
                        arg=Arg('batch_size', batch_size))
    # Crop seeds come from the main process, so runs with workers repeat too.
    train_iter = gluon.data.DataLoader(train_set, batch_sampler=batches,
                                       num_workers=num_workers)
    train_iter.batch_sampler = batches
    # D2L drops the last partial test batch; d2lfcn scores every validation
    # image. Distributed workers each score a share and add up the counts.
    if num_parts > 1:
        test_set = test_set.shard(num_parts, part_index)
    test_iter = gluon.data.DataLoader(test_set, batch_size, last_batch='keep',
                                      num_workers=num_workers)
    return train_iter, test_iter


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
        `voc_loaders`): every worker gets the same number of training batches.

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
    return voc_loaders(train_set, test_set, batch_size, num_workers, num_parts,
                       part_index)
