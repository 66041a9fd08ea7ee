"""Test d2lfcn.book.standin: the stand-in classifier, its cache, and the choice of classifier.

References: BatchNorm's running mean against the data's channel means,
training run directly, Gluon's own parameter files, and a model-zoo cache
file written by the test.
"""
import os

import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon.model_zoo import vision

from d2lfcn import classifier as clf
from d2lfcn.book import standin
from d2lfcn.book.patches import STANDIN_CLASSES
from d2lfcn.drawings import heatmap_figure, sample_photo
from d2lfcn.model import backbone_file


def test_batchnorm_refresh_runs_backward_passes(resnet):
    # MXNet updates BatchNorm's running statistics in backward: after 30
    # batches with momentum 0.9 the first layer's (a BatchNorm on the raw
    # input) running mean is within 0.9 ** 30 of the data's channel means.
    X = nd.random.uniform(2, 4, shape=(8, 3, 32, 32))
    standin._refresh_batchnorm(resnet, X, batch_size=4)
    expected = X.asnumpy().mean(axis=(0, 2, 3))
    got = resnet.features[0].running_mean.data().asnumpy()
    assert np.abs(got - expected).max() < 0.05 * expected.max()


def test_pretrained_weights_come_from_the_cache_only(tmp_path, monkeypatch, small_voc_dir):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path / 'data'))
    assert clf.pretrained_classifier() is None     # nothing cached: no download
    assert standin.imagenet_classifier() is None
    path = backbone_file()
    assert path.startswith(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    saved = vision.resnet18_v2()
    saved.initialize(mx.init.Xavier())
    saved(nd.zeros((1, 3, 32, 32)))                # finish deferred initialisation
    saved.save_parameters(path)
    got = standin.get_classifier()
    assert got.pretrained and 'ImageNet' in got.note
    assert len(got.classes) == 1000 and got.classes[0] == 'tench'
    assert got.classes[1] == 'goldfish'
    assert np.array_equal(got.net.output.weight.data().asnumpy(),
                          saved.output.weight.data().asnumpy())
    # The chapter prints the note: it names no file of the machine.
    assert str(tmp_path) not in got.note + got.summary and '.params' not in got.note
    # The stand-in is there on request, whatever the cache holds.
    own = standin.standin_classifier(small_voc_dir, **TINY_STANDIN)
    assert not own.pretrained and own.net.output.weight.shape == (6, 512)
    # By default the figure draws the top classes and only the groups the
    # classifier finds: random weights find no dog, so there is no dog row.
    photo = sample_photo()[::8, ::8]
    fig = heatmap_figure(got, photo, (64,))
    labels = [fig.axes[r * 3].get_ylabel() for r in range((len(fig.axes) - 1) // 3)]
    maps = clf.class_heatmaps(clf.to_fully_convolutional(got.net), photo, (64,))
    dog = clf.group_heatmap(maps[0], clf.IMAGENET_DOGS).max().asscalar()
    assert dog < 0.5 and len(labels) == 3 and not any('dog' in n for n in labels)


def test_stand_in_when_nothing_is_cached(tmp_path, monkeypatch, small_voc_dir):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    got = standin.get_classifier(small_voc_dir, num_epochs=1, size=32, bn_batches=2,
                             verbose=False)
    assert not got.pretrained
    assert got.note.startswith('STAND-IN') and got.summary.startswith('STAND-IN')
    for text in (got.note, got.summary):                 # no path of the machine
        assert str(tmp_path) not in text and '.params' not in text and '/' not in text
    assert got.classes == ['background', 'aeroplane', 'bus', 'cat', 'person',
                           'potted plant']
    assert got.net.output.weight.shape == (6, 512)
    img, label, names = standin.standin_example(small_voc_dir)
    assert label.shape == img.shape[:2] and names[0] == 'background'
    objects = [n for n in names if n != 'background']
    fig = heatmap_figure(got, img, (64, 96), objects, groups=['vehicle'])
    rows = len(objects) + 1                            # the classes, and the group
    # 2 sizes and 2 combinations per row, and one colour bar.
    assert len(fig.axes) == rows * (2 + 2) + 1
    labels = [fig.axes[r * 4].get_ylabel() for r in range(rows)]
    assert labels[:-1] == objects and labels[-1].split() == ['vehicle', '=', 'aeroplane',
                                                             '+', 'bus']
    assert 'probability' in fig.axes[-1].get_ylabel()    # the colour bar
    # The group's row shows the sum of its classes' probabilities.
    maps = clf.class_heatmaps(clf.to_fully_convolutional(got.net), img, (64,))
    shown = np.asarray(fig.axes[(rows - 1) * 4].images[1].get_array())
    assert np.abs(shown - (maps[0][1] + maps[0][2]).asnumpy()).max() < 1e-5
    # Without `groups`, the groups of several classes the combination finds.
    fig = heatmap_figure(got, img, (64, 96), objects)
    combined = clf.combine_heatmaps(clf.class_heatmaps(
        clf.to_fully_convolutional(got.net), img, (64, 96)))
    found = clf.groups_found(combined, clf.class_groups(got.classes))
    assert len(fig.axes) == (len(objects) + len(found)) * 4 + 1


TINY_STANDIN = dict(num_epochs=1, size=32, bn_batches=2, verbose=False)


def _refuse_training(*args, **kwargs):
    raise AssertionError('the cached stand-in should have been used')


def test_stand_in_file_is_trained_once_and_holds_the_trained_weights(
        tmp_path, monkeypatch, small_voc_dir):
    path = standin.standin_classifier_file(small_voc_dir, tmp_path, **TINY_STANDIN)
    assert os.path.dirname(path) == str(tmp_path) and path.endswith('.params')
    # Reference: the same training, run directly (seeded, so it repeats).
    net, acc = standin.train_standin_classifier(small_voc_dir, **TINY_STANDIN)
    saved = nd.load(path)
    for name, param in net._collect_params_with_prefix().items():
        np.testing.assert_allclose(saved[name].asnumpy(), param.data().asnumpy(),
                                   rtol=1e-4, atol=1e-5)
    assert standin._standin_accuracy(path) == pytest.approx(acc)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(path), os.path.basename(path)[:-7] + '.json']), 'no temp files'
    # Same arguments, defaults spelled out or not: the file, without training.
    monkeypatch.setattr(standin, 'train_standin_classifier', _refuse_training)
    mtime = os.path.getmtime(path)
    again = standin.standin_classifier_file(small_voc_dir, tmp_path, lr=0.05, **TINY_STANDIN)
    assert again == path and os.path.getmtime(path) == mtime


def test_stand_in_file_is_keyed_by_arguments_and_complete_pairs(
        tmp_path, monkeypatch, small_voc_dir):
    calls = []

    def fake_training(voc_dir, **kwargs):
        calls.append(kwargs)
        net = vision.resnet18_v2(classes=len(STANDIN_CLASSES))
        net.initialize()
        net(nd.zeros((1, 3, 32, 32)))
        return net, 0.5

    monkeypatch.setattr(standin, 'train_standin_classifier', fake_training)
    a = standin.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=1)
    b = standin.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=2)
    assert a != b and len(calls) == 2
    os.remove(a[:-7] + '.json')  # e.g. killed between the two writes
    assert standin.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=1) == a
    assert len(calls) == 3 and standin._standin_accuracy(a) == 0.5


def test_stand_in_file_is_a_backbone_and_get_classifier_reuses_it(
        tmp_path, monkeypatch, small_voc_dir):
    from d2lfcn.model import get_fcn
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path / 'data'))
    path = standin.standin_classifier_file(small_voc_dir, **TINY_STANDIN)
    assert path.startswith(str(tmp_path / 'data'))
    monkeypatch.setattr(standin, 'train_standin_classifier', _refuse_training)
    got = standin.get_classifier(small_voc_dir, **TINY_STANDIN)
    assert f'{standin._standin_accuracy(path):.2f}' in got.note
    saved = nd.load(path)
    np.testing.assert_array_equal(got.net.output.weight.data().asnumpy(),
                                  saved['output.weight'].asnumpy())
    # As --backbone-params: the FCN's first convolution holds the stand-in's.
    fcn = get_fcn(21, backbone_params=path)
    np.testing.assert_array_equal(fcn.features[1].weight.data().asnumpy(),
                                  saved['features.1.weight'].asnumpy())


def test_stand_in_file_in_an_unusable_folder_is_one_clear_error(
        tmp_path, monkeypatch, small_voc_dir):
    from d2lfcn.utils import UserError

    def fake_training(voc_dir, **kwargs):
        net = vision.resnet18_v2(classes=len(STANDIN_CLASSES))
        net.initialize()
        net(nd.zeros((1, 3, 32, 32)))
        return net, 0.5

    monkeypatch.setattr(standin, 'train_standin_classifier', fake_training)
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    with pytest.raises(UserError, match='a-file.*D2LFCN_DATA'):
        standin.standin_classifier_file(small_voc_dir, blocker / 'data')
    # The dataset's parent folder names the same dataset, and the same file.
    parent = os.path.dirname(os.path.dirname(small_voc_dir))   # holds VOCdevkit
    assert (standin.standin_classifier_file(parent, tmp_path / 'd')
            == standin.standin_classifier_file(small_voc_dir, tmp_path / 'd'))

