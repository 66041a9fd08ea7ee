"""Tests for d2lfcn/synthetic.py: layout, labels, void bands, determinism, atomicity."""
import filecmp
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from d2lfcn import synthetic, voc
from d2lfcn.utils import UserError, default_data_dir


def _split(voc_dir, name):
    with open(os.path.join(voc_dir, 'ImageSets', 'Segmentation', name + '.txt')) as f:
        return f.read().split()


def _pair(voc_dir, name):
    img = cv2.imread(os.path.join(voc_dir, 'JPEGImages', name + '.jpg'))[:, :, ::-1]
    png = Image.open(os.path.join(voc_dir, 'SegmentationClass', name + '.png'))
    return img, png


def test_layout_is_exactly_vocs(small_voc_dir, small_voc_params):
    train, val = _split(small_voc_dir, 'train'), _split(small_voc_dir, 'val')
    assert len(train) == small_voc_params['num_train'] and len(val) == small_voc_params['num_val']
    assert not set(train) & set(val)
    assert _split(small_voc_dir, 'trainval') == sorted(train + val)
    assert sorted(os.listdir(small_voc_dir)) == ['ImageSets', 'JPEGImages',
                                                 'SegmentationClass', 'synthetic.json']
    assert os.listdir(os.path.join(small_voc_dir, 'ImageSets')) == ['Segmentation']
    assert sorted(os.listdir(os.path.join(small_voc_dir, 'JPEGImages'))) == \
        sorted(n + '.jpg' for n in train + val)
    assert sorted(os.listdir(os.path.join(small_voc_dir, 'SegmentationClass'))) == \
        sorted(n + '.png' for n in train + val)
    assert small_voc_dir.endswith(os.path.join('VOCdevkit', 'VOC2012'))


def test_labels_are_palette_pngs_with_void_bands(small_voc_dir):
    allowed = {0, 255} | set(synthetic.SYNTHETIC_CLASSES)
    for name in _split(small_voc_dir, 'trainval'):
        img, png = _pair(small_voc_dir, name)
        assert png.mode == 'P' and png.size == (img.shape[1], img.shape[0])
        palette = np.array(png.getpalette()).reshape(-1, 3)
        assert palette[:21].tolist() == voc.VOC_COLORMAP
        assert palette[255].tolist() == [224, 224, 192]
        ids = np.array(png)
        assert set(np.unique(ids).tolist()) <= allowed
        assert (ids > 0).any() and (ids == 255).any()
        assert (ids == 255).mean() < 0.3
        # Where two different classes meet, there is void in between: no two
        # 8-neighbours carry different non-void labels.
        pad = np.pad(ids, 1, constant_values=255)
        h, w = ids.shape
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                other = pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                clash = (ids != other) & (ids != 255) & (other != 255)
                assert not clash.any(), name


def test_sizes_are_mixed_and_some_are_below_the_crop(small_voc_dir, small_voc_params):
    sizes = [np.array(_pair(small_voc_dir, n)[1]).shape for n in _split(small_voc_dir, 'trainval')]
    assert all(small_voc_params['min_size'] <= s <= small_voc_params['max_size'] for hw in sizes for s in hw)
    small = sum(min(hw) < small_voc_params['small_size'] for hw in sizes)
    assert 0 < small < len(sizes) / 2
    assert len(set(sizes)) > len(sizes) / 2


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    params = dict(num_train=3, num_val=2, min_size=40, max_size=80, small_size=50)
    a = synthetic.make_synthetic_voc(str(tmp_path / 'a'), seed=5, **params)
    b = synthetic.make_synthetic_voc(str(tmp_path / 'b'), seed=5, **params)
    c = synthetic.make_synthetic_voc(str(tmp_path / 'c'), seed=6, **params)
    for sub in ('JPEGImages', 'SegmentationClass'):
        names = sorted(os.listdir(os.path.join(a, sub)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(a, sub), os.path.join(b, sub),
                                                   names, shallow=False)
        assert match == names and not mismatch and not errors
        _, mismatch, _ = filecmp.cmpfiles(os.path.join(a, sub), os.path.join(c, sub),
                                          names, shallow=False)
        assert mismatch == names


def test_existing_set_is_reused_not_regenerated(tmp_path, monkeypatch):
    params = dict(num_train=2, num_val=1, min_size=40, max_size=60, small_size=40)
    first = synthetic.make_synthetic_voc(str(tmp_path), **params)

    def must_not_draw(*args):
        raise AssertionError('regenerated an existing dataset')
    monkeypatch.setattr(synthetic, '_draw_example', must_not_draw)
    assert synthetic.make_synthetic_voc(str(tmp_path), **params) == first
    with pytest.raises(UserError, match='other parameters|these parameters'):
        synthetic.make_synthetic_voc(str(tmp_path), seed=1, **params)


def test_crash_mid_generation_leaves_nothing(tmp_path, monkeypatch):
    real, calls = synthetic._draw_example, []

    def crash_on_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)
    monkeypatch.setattr(synthetic, '_draw_example', crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        synthetic.make_synthetic_voc(str(tmp_path), num_train=4, num_val=2)
    assert os.listdir(tmp_path / 'VOCdevkit') == []
    monkeypatch.setattr(synthetic, '_draw_example', real)
    voc_dir = synthetic.make_synthetic_voc(str(tmp_path), num_train=4, num_val=2)
    assert len(_split(voc_dir, 'trainval')) == 6


def test_a_set_abandoned_by_a_killed_process_is_removed(tmp_path):
    """SIGKILL skips every cleanup; the next build removes what the dead one left."""
    import signal
    import subprocess
    import sys
    code = ('import sys\nfrom d2lfcn import synthetic\n'
            'real = synthetic._draw_example\ncalls = []\n'
            'def draw(*args):\n'
            '    calls.append(1)\n'
            '    if len(calls) == 3:\n'
            '        import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n'
            '    return real(*args)\n'
            'synthetic._draw_example = draw\n'
            'synthetic.make_synthetic_voc(sys.argv[1], num_train=4, num_val=2)\n')
    proc = subprocess.run([sys.executable, '-c', code, str(tmp_path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    devkit = tmp_path / 'VOCdevkit'
    left = os.listdir(devkit)
    assert len(left) == 1 and left[0].startswith('.VOC2012.tmp-')
    alive = devkit / f'.VOC2012.tmp-{os.getpid()}-x'  # a build still running: kept
    alive.mkdir()
    voc_dir = synthetic.make_synthetic_voc(str(tmp_path), num_train=4, num_val=2)
    assert sorted(os.listdir(devkit)) == sorted(['VOC2012', alive.name])
    assert len(_split(voc_dir, 'trainval')) == 6


def _instance_colours(voc_dir, names):
    """Return [(class id, mean RGB of the class's pixels in one image)]."""
    out = []
    for name in names:
        img, png = _pair(voc_dir, name)
        ids = np.array(png)
        # Shrink each region so JPEG blur at its edges does not mix colours.
        for c in set(np.unique(ids).tolist()) - {0, 255}:
            core = cv2.erode((ids == c).astype(np.uint8), np.ones((5, 5), np.uint8))
            if core.sum() > 20:
                out.append((c, img[core.astype(bool)].mean(axis=0)))
    return out


def test_class_appearance_is_learnable(small_voc_dir):
    # A nearest-centroid rule on mean colour alone, fitted on train, must name
    # most val objects: the classes look different, as a network needs.
    train = _instance_colours(small_voc_dir, _split(small_voc_dir, 'train'))
    val = _instance_colours(small_voc_dir, _split(small_voc_dir, 'val'))
    classes = sorted({c for c, _ in train})
    assert len(classes) >= 4
    centroids = np.array([np.mean([m for c, m in train if c == k], axis=0) for k in classes])
    hits = [classes[np.argmin(((centroids - m) ** 2).sum(1))] == c for c, m in val
            if c in classes]
    assert len(hits) >= 5 and np.mean(hits) >= 0.75


def test_demo_set_lives_in_the_data_dir_and_is_read_by_the_voc_code(capsys):
    voc_dir = synthetic.demo_voc_dir()
    assert voc_dir.startswith(default_data_dir())
    assert synthetic.demo_voc_dir() == voc_dir
    params = synthetic.DEMO_VOC_PARAMS
    assert len(_split(voc_dir, 'train')) == params['num_train']
    ds = voc.VOCSegDataset(True, (128, 128), voc_dir)
    assert 0.7 * params['num_train'] <= len(ds) < params['num_train']
    assert f'read {len(ds)} examples' in capsys.readouterr().out
    feature, label = ds[0]
    assert feature.shape == (3, 128, 128) and label.shape == (128, 128)


def test_folder_names_that_are_not_utf8(tmp_path):
    # cv2.imwrite crashed (segmentation fault) on such paths.
    root = str(tmp_path / os.fsdecode(b'data-\xff'))
    voc_dir = synthetic.make_synthetic_voc(root, num_train=2, num_val=1, min_size=64,
                                           max_size=64, small_fraction=0)
    feature, label = voc.VOCSegDataset(True, (64, 64), voc_dir)[0]
    assert feature.shape == (3, 64, 64) and label.shape == (64, 64)
