"""Tests for d2lfcn/voc.py: constants, both label paths, crops, the dataset and loaders."""
import os
import random

import cv2
import mxnet as mx
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

import d2lfcn
from d2lfcn import voc
from d2lfcn.utils import UserError

CROP = (64, 64)
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _split(voc_dir, name):
    with open(os.path.join(voc_dir, 'ImageSets', 'Segmentation', name + '.txt')) as f:
        return f.read().split()


def _paths(voc_dir, name):
    return (os.path.join(voc_dir, 'JPEGImages', name + '.jpg'),
            os.path.join(voc_dir, 'SegmentationClass', name + '.png'))


def _rgb(voc_dir, name):
    return cv2.imread(_paths(voc_dir, name)[0])[:, :, ::-1]


def _indices(voc_dir, name):
    im = Image.open(_paths(voc_dir, name)[1])
    assert im.mode == 'P'
    return np.array(im)


def _kept(voc_dir, split, crop=CROP):
    """Names of the images at least as large as the crop, in file order."""
    return [n for n in _split(voc_dir, split)
            if _indices(voc_dir, n).shape[0] >= crop[0] and
            _indices(voc_dir, n).shape[1] >= crop[1]]


def _unnormalize(feature):
    """(3, h, w) normalised float -> (h, w, 3) RGB values in 0..255."""
    return (feature.asnumpy().transpose(1, 2, 0) * STD + MEAN) * 255


def _devkit_colormap(n):
    # VOClabelcolormap.m from the VOC devkit, written out independently.
    def bit(v, i):
        return (v >> i) & 1
    cmap = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= bit(c, 0) << (7 - j)
            g |= bit(c, 1) << (7 - j)
            b |= bit(c, 2) << (7 - j)
            c >>= 3
        cmap.append([r, g, b])
    return cmap


def test_constants_match_the_devkit_palette():
    assert len(voc.VOC_CLASSES) == 21 and voc.VOC_CLASSES[15] == 'person'
    assert voc.voc_palette().tolist() == _devkit_colormap(256)
    assert voc.VOC_COLORMAP == _devkit_colormap(21)
    assert voc.voc_palette()[255].tolist() == voc.VOC_VOID_COLOR == [224, 224, 192]
    assert voc.IGNORE_LABEL == 255
    for name in ('VOC_CLASSES', 'load_data_voc', 'VOCSegDataset', 'read_voc_images',
                 'voc_rand_crop', 'voc_colormap2label', 'voc_label_indices'):
        assert hasattr(d2lfcn, name)


def test_d2l_colour_decoding_by_hand():
    colours = np.array([[[0, 0, 0], [128, 0, 0], [192, 128, 128]],
                        [[224, 224, 192], [0, 64, 128], [1, 2, 3]]], dtype=np.uint8)
    table = voc.voc_colormap2label()
    expected = [[0, 1, 15], [0, 20, 0]]  # void and unknown colours become 0 in D2L
    assert voc.voc_label_indices(mx.nd.array(colours), table).asnumpy().tolist() == expected
    assert voc.voc_label_indices(colours, table).asnumpy().tolist() == expected


def test_palette_and_colour_paths_agree(small_voc_dir):
    names = _split(small_voc_dir, 'train')
    features, labels = voc.read_voc_images(small_voc_dir, is_train=True)
    assert len(features) == len(labels) == len(names)
    table = voc.voc_colormap2label()
    saw_void = False
    for name, feature, label in zip(names, features, labels):
        assert feature.dtype == np.uint8 and label.dtype == np.uint8
        np.testing.assert_array_equal(feature.asnumpy(), _rgb(small_voc_dir, name))
        palette_ids = _indices(small_voc_dir, name)
        d2l_ids = voc.voc_label_indices(label, table).asnumpy()
        void = palette_ids == 255
        saw_void |= void.any()
        np.testing.assert_array_equal(d2l_ids[~void], palette_ids[~void])
        assert (d2l_ids[void] == 0).all()
        np.testing.assert_array_equal(voc.read_voc_label(_paths(small_voc_dir, name)[1]),
                                      palette_ids)
    assert saw_void
    few, _ = voc.read_voc_images(small_voc_dir, is_train=False, max_images=2)
    assert len(few) == 2


def test_rgb_label_png_is_decoded_by_colour(small_voc_dir, tmp_path):
    name = _split(small_voc_dir, 'val')[0]
    ids = _indices(small_voc_dir, name)
    rgb = Image.open(_paths(small_voc_dir, name)[1]).convert('RGB')
    rgb.save(tmp_path / 'rgb.png')
    np.testing.assert_array_equal(voc.read_voc_label(str(tmp_path / 'rgb.png')), ids)
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(tmp_path / 'odd.png')
    with pytest.raises(UserError, match='odd.png.*not a VOC class colour'):
        voc.read_voc_label(str(tmp_path / 'odd.png'))


def test_voc_rand_crop_keeps_image_and_label_aligned():
    random.seed(0)
    h, w = 7, 9
    feature = np.arange(h * w * 3).reshape(h, w, 3)
    label = np.arange(h * w).reshape(h, w)
    corners = set()
    for _ in range(300):
        f, lab = voc.voc_rand_crop(feature, label, 3, 4)
        assert f.shape == (3, 4, 3) and lab.shape == (3, 4)
        y, x = divmod(int(lab[0, 0]), w)
        np.testing.assert_array_equal(lab, label[y:y + 3, x:x + 4])
        np.testing.assert_array_equal(f, feature[y:y + 3, x:x + 4])
        corners.add((y, x))
    assert corners == {(y, x) for y in range(5) for x in range(6)}
    f, lab = voc.voc_rand_crop(mx.nd.array(feature), mx.nd.array(label), 3, 4)
    assert f.shape == (3, 4, 3) and isinstance(lab, mx.nd.NDArray)


def test_normalize_image_by_hand():
    img = np.array([[[255, 0, 128]]], dtype=np.uint8)
    out = voc.normalize_image(mx.nd.array(img, dtype='uint8')).asnumpy()
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_dataset_filters_small_images_and_prints_count(small_voc_dir, capsys):
    kept = _kept(small_voc_dir, 'train')
    assert 0 < len(kept) < len(_split(small_voc_dir, 'train'))  # the fixture has small ones
    ds = voc.VOCSegDataset(True, CROP, small_voc_dir)
    assert capsys.readouterr().out == f'read {len(kept)} examples\n'
    assert len(ds) == len(kept)


def _find_window(full, crop):
    """Return every (y, x) where `crop` occurs in `full` (both (h, w, 3) uint8)."""
    windows = sliding_window_view(full, crop.shape)[:, :, 0]
    hits = np.argwhere((windows == crop).all(axis=(2, 3, 4)))
    return [tuple(h) for h in hits]


def test_training_items_are_aligned_random_crops(small_voc_dir):
    random.seed(1)
    kept = _kept(small_voc_dir, 'train')
    ds = voc.VOCSegDataset(True, CROP, small_voc_dir)
    corners = set()
    for _ in range(4):
        for i, name in enumerate(kept):
            feature, label = ds[i]
            assert feature.shape == (3,) + CROP and feature.dtype == np.float32
            assert label.shape == CROP and label.dtype == np.float32
            pixels = _unnormalize(feature)
            crop = np.round(pixels).astype(np.uint8)
            assert np.abs(pixels - crop).max() < 0.01
            hits = _find_window(_rgb(small_voc_dir, name), crop)
            assert hits, name
            ids = _indices(small_voc_dir, name)
            assert any((ids[y:y + CROP[0], x:x + CROP[1]] == label.asnumpy()).all()
                       for y, x in hits)
            corners.add((name, hits[0]))
    assert len(corners) > len(kept)  # crops move between passes


def test_eval_items_are_centre_crops_and_repeat(small_voc_dir):
    kept = _kept(small_voc_dir, 'val')
    ds = voc.VOCSegDataset(False, CROP, small_voc_dir)
    for i, name in enumerate(kept):
        img, ids = _rgb(small_voc_dir, name), _indices(small_voc_dir, name)
        y, x = (img.shape[0] - CROP[0]) // 2, (img.shape[1] - CROP[1]) // 2
        feature, label = ds[i]
        np.testing.assert_allclose(_unnormalize(feature),
                                   img[y:y + CROP[0], x:x + CROP[1]], atol=0.01)
        np.testing.assert_array_equal(label.asnumpy(), ids[y:y + CROP[0], x:x + CROP[1]])


def test_boundary_background_reproduces_d2l(small_voc_dir):
    kept = _kept(small_voc_dir, 'val')
    _, labels = voc.read_voc_images(small_voc_dir, is_train=False)
    by_name = dict(zip(_split(small_voc_dir, 'val'), labels))
    table = voc.voc_colormap2label()
    ignore = voc.VOCSegDataset(False, CROP, small_voc_dir)
    background = voc.VOCSegDataset(False, CROP, small_voc_dir, boundary='background')
    for i, name in enumerate(kept):
        rgb = by_name[name]
        y, x = (rgb.shape[0] - CROP[0]) // 2, (rgb.shape[1] - CROP[1]) // 2
        d2l = voc.voc_label_indices(rgb[y:y + CROP[0], x:x + CROP[1]], table).asnumpy()
        np.testing.assert_array_equal(background[i][1].asnumpy(), d2l)
        mine = ignore[i][1].asnumpy()
        assert ((mine == d2l) | (mine == 255)).all()
    with pytest.raises(ValueError, match='boundary'):
        voc.VOCSegDataset(False, CROP, small_voc_dir, boundary='void')


def test_load_data_voc_batches_and_deterministic_eval(small_voc_dir):
    train_iter, test_iter = voc.load_data_voc(4, CROP, small_voc_dir)
    n_train, n_val = len(_kept(small_voc_dir, 'train')), len(_kept(small_voc_dir, 'val'))
    batches = list(train_iter)
    assert len(batches) == n_train // 4  # last incomplete batch dropped, as in D2L
    for X, Y in batches:
        assert X.shape == (4, 3) + CROP and Y.shape == (4,) + CROP
        values = set(np.unique(Y.asnumpy()).tolist())
        assert values <= set(range(21)) | {255}
    first = [(X.asnumpy(), Y.asnumpy()) for X, Y in test_iter]
    second = [(X.asnumpy(), Y.asnumpy()) for X, Y in test_iter]
    # Every validation image is evaluated: the last partial batch is kept.
    assert len(first) == -(-n_val // 4)
    assert sum(len(b) for _, b in first) == n_val
    for (a, b), (c, d) in zip(first, second):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_load_data_voc_with_worker_processes(small_voc_dir):
    train_iter, _ = voc.load_data_voc(4, CROP, small_voc_dir, num_workers=1)
    X, Y = next(iter(train_iter))
    assert X.shape == (4, 3) + CROP and Y.shape == (4,) + CROP


def _epoch(train_iter, seed):
    np.random.seed(seed)
    return [(X.asnumpy(), Y.asnumpy()) for X, Y in train_iter]


def test_random_crops_follow_the_main_process_seed_even_with_workers(small_voc_dir):
    # Forked workers share one random state; crops must not depend on it.
    plain, _ = voc.load_data_voc(2, CROP, small_voc_dir, num_workers=0)
    forked, _ = voc.load_data_voc(2, CROP, small_voc_dir, num_workers=2)
    a, b, c = _epoch(plain, 7), _epoch(forked, 7), _epoch(plain, 8)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_load_data_voc_default_dir_needs_no_network(small_voc_dir, tmp_path, monkeypatch):
    import shutil
    shutil.copytree(small_voc_dir, tmp_path / 'VOCdevkit' / 'VOC2012')
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError('network used although the data is there')
    monkeypatch.setattr(voc, 'download', no_network)
    train_iter, test_iter = voc.load_data_voc(2, CROP)
    assert len(train_iter) == len(_kept(small_voc_dir, 'train')) // 2


def test_load_data_voc_shards_give_every_worker_the_same_steps(small_voc_dir):
    """dist_sync workers must take equal steps, or the one with more waits forever."""
    train_len = len(voc.VOCSegDataset(True, CROP, small_voc_dir))
    test_len = len(voc.VOCSegDataset(False, CROP, small_voc_dir))
    parts = [voc.load_data_voc(2, CROP, small_voc_dir, num_workers=0, num_parts=3,
                               part_index=k) for k in range(3)]
    steps = [len(list(train)) for train, _ in parts]
    assert len(set(steps)) == 1 and steps[0] == train_len // 3 // 2
    served = [i for train, _ in parts for i in train.batch_sampler.served]
    assert len(set(served)) == len(served)                   # disjoint shards
    assert all(i % 3 == k for k, (train, _) in enumerate(parts)
               for i in train.batch_sampler.served)
    # The validation set is split into shares that add up to all of it.
    assert sum(sum(x.shape[0] for x, _ in test) for _, test in parts) == test_len


def test_whole_images_and_crops_of_one_dataset(small_voc_dir):
    whole = voc.VOCSegDataset(False, None, small_voc_dir)
    names = _split(small_voc_dir, 'val')
    assert len(whole) == len(names)                          # nothing dropped
    for i, name in enumerate(names):
        x, y = whole[i]
        label = voc.read_voc_label(os.path.join(small_voc_dir, 'SegmentationClass',
                                                name + '.png'))
        assert x.shape == (3,) + label.shape
        np.testing.assert_array_equal(y.asnumpy(), label)
    crop = (min(e[2] for e in whole.examples) + 1, 32)  # drops the lowest image
    cropped = whole.with_crop(crop)
    direct = voc.VOCSegDataset(False, crop, small_voc_dir)
    assert cropped.examples == direct.examples and len(cropped) < len(whole)
    np.testing.assert_array_equal(cropped[0][0].asnumpy(), direct[0][0].asnumpy())


def test_find_voc_dir_accepts_parent_folders(small_voc_dir):
    devkit = os.path.dirname(small_voc_dir)
    assert voc.find_voc_dir(small_voc_dir) == small_voc_dir
    assert os.path.samefile(voc.find_voc_dir(devkit), small_voc_dir)
    assert os.path.samefile(voc.find_voc_dir(os.path.dirname(devkit)), small_voc_dir)


# --- bad input: one clear line naming the file, never a cv2/PIL traceback ------------

def _first_train(voc_dir):
    return _split(voc_dir, 'train')[0]


def _missing_folder(voc_dir):
    return os.path.join(voc_dir, 'nowhere'), 'nowhere', 'data_dir'


def _missing_image(voc_dir):
    jpg = _paths(voc_dir, _first_train(voc_dir))[0]
    os.remove(jpg)
    return voc_dir, jpg, 'missing'


def _truncated_jpeg(voc_dir):
    jpg = _paths(voc_dir, _first_train(voc_dir))[0]
    data = open(jpg, 'rb').read()
    open(jpg, 'wb').write(data[:len(data) // 2])
    return voc_dir, jpg, 'truncated'


def _garbage_jpeg(voc_dir):
    jpg = _paths(voc_dir, _first_train(voc_dir))[0]
    open(jpg, 'wb').write(b'this is not a jpeg' * 10)
    return voc_dir, jpg, 'unreadable'


def _label_size_differs(voc_dir):
    png = _paths(voc_dir, _first_train(voc_dir))[1]
    im = Image.open(png)
    im.resize((im.width + 3, im.height)).save(png)
    return voc_dir, png, f'{im.width + 3}x{im.height}'


def _label_value_out_of_range(voc_dir):
    png = _paths(voc_dir, _first_train(voc_dir))[1]
    im = Image.open(png)
    ids = np.array(im)
    ids[0, 0] = 37
    out = Image.fromarray(ids)
    out.putpalette(im.getpalette())
    out.save(png)
    return voc_dir, png, 'value 37'


def _label_missing(voc_dir):
    png = _paths(voc_dir, _first_train(voc_dir))[1]
    os.remove(png)
    return voc_dir, png, 'missing'


def _label_truncated(voc_dir):
    png = _paths(voc_dir, _first_train(voc_dir))[1]
    data = open(png, 'rb').read()
    open(png, 'wb').write(data[:len(data) // 2])
    return voc_dir, png, 'truncated'


def _empty_split(voc_dir):
    txt = os.path.join(voc_dir, 'ImageSets', 'Segmentation', 'train.txt')
    open(txt, 'w').close()
    return voc_dir, txt, 'no images'


@pytest.mark.parametrize('damage', [
    _missing_folder, _missing_image, _truncated_jpeg, _garbage_jpeg, _label_size_differs,
    _label_value_out_of_range, _label_missing, _label_truncated, _empty_split])
def test_bad_input_is_one_clear_line(small_voc_copy, damage):
    voc_dir, culprit, problem = damage(small_voc_copy)
    with pytest.raises(UserError) as info:
        voc.VOCSegDataset(True, CROP, voc_dir)
    msg = str(info.value)
    assert '\n' not in msg and culprit in msg and problem in msg, msg


def test_every_image_smaller_than_crop_is_one_clear_line(small_voc_dir):
    with pytest.raises(UserError) as info:
        voc.VOCSegDataset(False, (200, 200), small_voc_dir)
    msg = str(info.value)
    assert '\n' not in msg and 'val.txt' in msg and '200x200' in msg


# --- voc_examples: images and class ids, checked against PIL ---------------------

def pil_example(voc_dir, name):
    image = np.array(Image.open(os.path.join(voc_dir, 'JPEGImages', name + '.jpg')))
    label = np.array(Image.open(os.path.join(voc_dir, 'SegmentationClass', name + '.png')))
    return image, label


def test_examples_are_the_listed_files_in_order(small_voc_dir):
    with open(os.path.join(small_voc_dir, 'ImageSets', 'Segmentation', 'val.txt')) as f:
        names = f.read().split()[:3]
    examples = list(voc.voc_examples(small_voc_dir, is_train=False, max_images=3))
    assert len(examples) == 3
    for name, (image, label) in zip(names, examples):
        ref_image, ref_label = pil_example(small_voc_dir, name)
        assert image.dtype == label.dtype == np.uint8
        np.testing.assert_array_equal(image, ref_image)
        np.testing.assert_array_equal(label, ref_label)


def test_boundary_background_turns_void_into_background(small_voc_dir):
    ignore = list(voc.voc_examples(small_voc_dir, max_images=4))
    background = list(voc.voc_examples(small_voc_dir, max_images=4, boundary='background'))
    assert any((label == 255).any() for _, label in ignore)  # the void band is there
    for (_, kept), (_, merged) in zip(ignore, background):
        np.testing.assert_array_equal(merged, np.where(kept == 255, 0, kept))
    with pytest.raises(ValueError, match='boundary'):
        next(voc.voc_examples(small_voc_dir, boundary='void'))
