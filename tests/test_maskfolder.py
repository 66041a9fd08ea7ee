"""Test d2lfcn.maskfolder: your own dataset as images/, masks/ and classes.txt.

References: the same synthetic pixels written in VOC's layout and read by
d2lfcn.voc (itself checked against D2L's reading and PIL), and masks written
here with PIL.
"""
import json
import os
import shutil

import numpy as np
import pytest
from mxnet import nd
from PIL import Image

from d2lfcn.maskfolder import FolderSegDataset, mask_folder_split, read_classes
from d2lfcn.segdata import segmentation_loaders
from d2lfcn.synthetic import make_synthetic_voc
from d2lfcn.utils import UserError
from d2lfcn.voc import VOC_CLASSES, VOCSegDataset

from conftest import SMALL_VOC


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """The conftest's small synthetic set, in the plain folder layout (read-only)."""
    return make_synthetic_voc(str(tmp_path_factory.mktemp('small-folder')), **SMALL_VOC,
                              layout='folder')


@pytest.fixture
def folder_copy(folder, tmp_path):
    dst = tmp_path / 'dataset'
    shutil.copytree(folder, dst)
    return dst


def _batches(train_set, test_set, seed=0):
    np.random.seed(seed)
    train_iter, test_iter = segmentation_loaders(train_set, test_set, 4, num_workers=0)
    return [(X.asnumpy(), y.asnumpy()) for X, y in list(train_iter) + list(test_iter)]


def test_both_layouts_give_identical_batches(small_voc_dir, folder):
    assert sorted(os.listdir(folder)) == ['classes.txt', 'images', 'masks',
                                          'synthetic.json', 'train.txt', 'val.txt']
    voc = _batches(VOCSegDataset(True, (64, 64), small_voc_dir),
                   VOCSegDataset(False, (64, 64), small_voc_dir))
    ours = _batches(FolderSegDataset(True, (64, 64), folder),
                    FolderSegDataset(False, (64, 64), folder))
    assert len(voc) == len(ours) > 2
    for (X1, y1), (X2, y2) in zip(voc, ours):
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
    assert 255 in np.concatenate([y.ravel() for _, y in ours])  # void bands survive
    assert FolderSegDataset(False, None, folder).classes == VOC_CLASSES


def test_without_split_files_a_seeded_80_20_split(folder_copy):
    os.remove(folder_copy / 'train.txt')
    os.remove(folder_copy / 'val.txt')
    train, val, made = mask_folder_split(str(folder_copy), seed=3)
    assert made and (train, val, True) == mask_folder_split(str(folder_copy), seed=3)
    assert mask_folder_split(str(folder_copy), seed=4)[1] != val
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(folder_copy / 'images'))
    assert sorted(train + val) == names and not set(train) & set(val)
    assert len(val) == round(0.2 * len(names))  # 20 images: 4 for validation


def _write_mask(path, ids):
    Image.fromarray(np.asarray(ids, dtype=np.uint8)).save(path)


def _first(folder):
    name = sorted(os.listdir(folder / 'masks'))[0]
    return name[:-len('.png')], folder / 'masks' / name


def _bad_value(folder):
    name, mask = _first(folder)
    ids = np.array(Image.open(mask))
    ids[0, 0] = 21
    _write_mask(mask, ids)
    return mask, 'mask value 21 is neither a class index 0..20'


def _rgb_mask(folder):
    name, mask = _first(folder)
    Image.open(mask).convert('RGB').save(mask)
    return mask, 'an RGB mask; save masks as single-channel PNGs'


def _image_without_mask(folder):
    name, mask = _first(folder)
    os.remove(mask)
    return folder / 'images' / f'{name}.jpg', 'no mask for it'


def _mask_without_image(folder):
    name, mask = _first(folder)
    os.remove(folder / 'images' / f'{name}.jpg')
    return mask, 'no image for it'


def _sizes_differ(folder):
    name, mask = _first(folder)
    ids = np.array(Image.open(mask))
    _write_mask(mask, ids[:-1])
    return mask, 'but its image'


def _empty_class(folder):
    (folder / 'classes.txt').write_text('background\n\ncat\n')
    return folder / 'classes.txt', 'line 2: empty class name'


def _duplicate_class(folder):
    (folder / 'classes.txt').write_text('background\ncat\ndog\ncat\n')
    return folder / 'classes.txt', "line 4: class 'cat' again (first on line 2)"


def _one_split_file(folder):
    os.remove(folder / 'val.txt')
    return folder / 'train.txt', 'without'


def _unknown_name_in_split(folder):
    with open(folder / 'val.txt', 'a') as f:
        f.write('no_such_image\n')
    return folder / 'val.txt', "'no_such_image', which images/ does not hold"


@pytest.mark.parametrize('damage', [_bad_value, _rgb_mask, _image_without_mask,
                                    _mask_without_image, _sizes_differ, _empty_class,
                                    _duplicate_class, _one_split_file,
                                    _unknown_name_in_split])
def test_bad_input_is_one_line_naming_the_file(damage, folder_copy):
    path, fragment = damage(folder_copy)
    with pytest.raises(UserError) as e:
        FolderSegDataset(True, (64, 64), folder_copy)
        FolderSegDataset(False, (64, 64), folder_copy)
    message = str(e.value)
    assert '\n' not in message and str(path) in message and fragment in message, message


def test_class_names_are_read_as_written(tmp_path):
    (tmp_path / 'classes.txt').write_bytes('\ufeffbackground\n road \nvoiture\n\n'.encode())
    assert read_classes(str(tmp_path)) == ['background', 'road', 'voiture']
    (tmp_path / 'classes.txt').write_text('background\n')
    with pytest.raises(UserError, match='1 classes; name between 2'):
        read_classes(str(tmp_path))


def test_a_run_on_a_folder_records_its_classes_split_and_legend(folder_copy, tmp_path,
                                                                capsys):
    from d2lfcn.cli import run_cli
    from d2lfcn.train import main
    (folder_copy / 'classes.txt').write_text('\n'.join(
        ['sky'] + [f'thing {i}' for i in range(1, 21)]) + '\n')
    os.remove(folder_copy / 'train.txt')
    os.remove(folder_copy / 'val.txt')
    out = tmp_path / 'run'
    argv = ['--data-dir', str(folder_copy), '--out-dir', str(out), '--num-epochs', '1',
            '--no-pretrained-base', '--crop-size', '64', '64', '--batch-size', '4',
            '--num-workers', '0', '--seed', '5']
    run_cli(main, argv)
    with open(out / 'split.json') as f:
        split = json.load(f)
    train, val, _ = mask_folder_split(str(folder_copy), seed=5)
    assert split == {'train': train, 'val': val}
    with open(out / 'classes.json') as f:
        classes = json.load(f)
    assert classes['names'][0] == 'sky' and len(classes['palette']) == 21
    # Resuming reads the recorded split, even if the folder has changed since.
    (folder_copy / 'train.txt').write_text('\n'.join(val) + '\n')
    (folder_copy / 'val.txt').write_text('\n'.join(train) + '\n')
    run_cli(main, argv + ['--num-epochs', '2', '--resume'])
    with open(out / 'split.json') as f:
        assert json.load(f) == split
    capsys.readouterr()
    # predict labels its overlay with the dataset's own colours.
    from d2lfcn.predict import main as predict
    image = sorted((folder_copy / 'images').iterdir())[0]
    run_cli(predict, [str(image), '--params', str(out / 'best.params'),
                      '--out-dir', str(tmp_path / 'pred')])
    assert sorted(os.listdir(tmp_path / 'pred')) == [f'{image.stem}_label.png',
                                                     f'{image.stem}_overlay.png']
    assert nd.load(str(out / 'best.params'))['score.weight'].shape[0] == 21
