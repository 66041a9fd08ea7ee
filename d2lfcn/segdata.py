"""Serve segmentation examples for training: random crops, the dataset class, samplers, loaders.

Every dataset layout (VOC's, the plain folder of `maskfolder`) lists its
examples as files; `SegDataset` decodes and crops them one at a time.
Explained in chapters/semantic-segmentation-and-dataset.md.
"""
import copy
import itertools
import os
import random

import numpy as np
from mxnet import gluon, nd

from .image import read_image
from .segmaps import IGNORE_LABEL, RGB_MEAN, RGB_STD
from .utils import Arg, UserError

__all__ = ['RandomCropSampler', 'SegDataset', 'get_dataloader_workers',
           'ShardBatchSampler', 'segmentation_loaders']

# Per channel: x -> (x/255 - mean) / std, as (x - 255 mean) * 1/(255 std).
_SHIFT = np.array(RGB_MEAN, dtype=np.float32) * 255
_SCALE = 1 / (np.array(RGB_STD, dtype=np.float32) * 255)


def _crop_origin(height, width, crop_h, crop_w, rand, rng=random):
    """Return the top-left corner of a random (rand=True) or centred crop."""
    if rand:
        return rng.randint(0, height - crop_h), rng.randint(0, width - crop_w)
    return (height - crop_h) // 2, (width - crop_w) // 2


class RandomCropSampler(gluon.data.Sampler):
    """Shuffle example indices and draw each example's crop seed, in this process.

    Yields (index, seed) pairs for a `SegDataset`. DataLoader worker processes
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


# Per channel in BGR order (OpenCV decodes BGR): x -> (x/255 - mean) / std.
_BGR_SHIFT = np.array(RGB_MEAN[::-1], dtype=np.float32) * 255
_BGR_SCALE = 1 / (np.array(RGB_STD[::-1], dtype=np.float32) * 255)


def _to_normalized_chw(rgb):
    """Return an (h, w, 3) uint8 RGB crop as a (3, h, w) float32 array, normalised as
    `segmaps.normalize_array` does."""
    out = np.empty((3,) + rgb.shape[:2], dtype=np.float32)  # (3, h, w)
    for c in range(3):  # one channel at a time: no (h, w, 3) float temporaries
        np.subtract(rgb[:, :, c], _SHIFT[c], out=out[c], dtype=np.float32)
        out[c] *= _SCALE[c]
    return out


class SegDataset(gluon.data.Dataset):
    """Serve a segmentation dataset's (image, label) examples, cropped, one file at a time.

    Parameters
    ----------
    examples : list of (image file, label file, height, width)
        What a layout (`VOCSegDataset`, `FolderSegDataset`) found and checked.
    is_train : bool
        True crops at random; False crops at the centre (deterministic).
    crop_size : (int, int) or int or None
        (height, width) of every example; smaller images are dropped, as in D2L.
        None keeps every image whole (for whole-image evaluation; items then
        differ in size, so load them one at a time).
    read_label : function
        Reads a label file as (H, W) uint8 class ids, 255 on void pixels.
    classes : list of str
        The class names, background first.
    boundary : {'ignore', 'background'}
        'ignore' keeps void pixels as 255 for the loss and metrics to skip;
        'background' turns them into 0, exactly as D2L's colour decoding does.
    split : str
        Where the examples were listed, for messages.

    Items are (feature, label): a (3, h, w) float32 NDArray normalised with
    ImageNet mean/std and an (h, w) float32 NDArray of class ids.
    Explained in chapters/semantic-segmentation-and-dataset.md.
    """

    def __init__(self, examples, is_train, crop_size, read_label, classes,
                 boundary='ignore', split='the split'):
        if boundary not in ('ignore', 'background'):
            raise ValueError(f"boundary must be 'ignore' or 'background', not {boundary!r}")
        if isinstance(crop_size, int):
            crop_size = (crop_size, crop_size)
        self.is_train = is_train
        self.crop_size = None if crop_size is None else tuple(int(s) for s in crop_size)
        self.boundary, self.read_label, self.classes = boundary, read_label, list(classes)
        self.rgb_mean = nd.array(RGB_MEAN)
        self.rgb_std = nd.array(RGB_STD)
        # d2lfcn keeps file names only and decodes per item: D2L holds every
        # image as float32 in RAM (about 5 GB for VOC train + val).
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

    def filter(self, examples):
        """Keep the examples at least as large as the crop."""
        if self.crop_size is None:
            return examples
        crop_h, crop_w = self.crop_size
        return [e for e in examples if e[2] >= crop_h and e[3] >= crop_w]

    def names(self, indices=None):
        """Return the example names (image file names without extension)."""
        indices = range(len(self.examples)) if indices is None else indices
        return [os.path.splitext(os.path.basename(self.examples[i][0]))[0] for i in indices]

    def __getitem__(self, idx):
        # idx is an index, or (index, crop seed) from RandomCropSampler.
        rng = random
        if isinstance(idx, tuple):
            idx, seed = idx
            rng = random.Random(seed)
        image, label_file, height, width = self.examples[idx]
        crop_h, crop_w = self.crop_size or (height, width)
        y, x = _crop_origin(height, width, crop_h, crop_w, self.is_train, rng)
        rgb = read_image(image)[y:y + crop_h, x:x + crop_w]                # (h, w, 3)
        label = self.read_label(label_file)[y:y + crop_h, x:x + crop_w]    # (h, w)
        if self.boundary == 'background':
            label = np.where(label == IGNORE_LABEL, 0, label)
        return (nd.array(_to_normalized_chw(rgb)),                         # (3, h, w)
                nd.array(label, dtype='float32'))                          # (h, w)

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


def segmentation_loaders(train_set, test_set, batch_size, num_workers=None, num_parts=1,
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
