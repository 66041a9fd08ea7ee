"""Test d2lfcn.classifier: the fully convolutional classifier and its heatmaps.

References: Gluon's own resnet18_v2 classifier (the converted network must
average to its output), plain numpy for the 1x1 convolution and the
softmax, hand-computed combinations, OpenCV's bilinear resize, PIL's
reading of the label PNGs, and a model-zoo cache file written by the test.
"""
import os

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon.model_zoo import vision
from PIL import Image

from d2lfcn import classifier as clf
from d2lfcn.model import backbone_file
from d2lfcn.synthetic import SYNTHETIC_CLASSES
from d2lfcn.voc import VOC_CLASSES


@pytest.fixture(scope='module')
def resnet():
    mx.random.seed(0)
    net = vision.resnet18_v2(classes=7)
    net.initialize(mx.init.Xavier())
    # Non-trivial BatchNorm statistics, so that evaluation mode matters.
    with autograd.record():
        net(nd.random.uniform(shape=(4, 3, 64, 64))).backward()
    return net


@pytest.mark.parametrize('shape', [(2, 3, 64, 64), (1, 3, 96, 160)])
def test_average_of_score_maps_is_the_classifier(resnet, shape):
    fcn = clf.to_fully_convolutional(resnet)
    X = nd.random.uniform(shape=shape)
    maps = fcn(X)
    assert maps.shape == (shape[0], 7, shape[2] // 32, shape[3] // 32)
    expected = resnet(X).asnumpy()                 # Gluon's classifier
    assert np.abs(maps.mean(axis=(2, 3)).asnumpy() - expected).max() < 1e-4


def test_score_maps_are_the_dense_layer_at_every_position(resnet):
    fcn = clf.to_fully_convolutional(resnet)
    X = nd.random.uniform(shape=(1, 3, 96, 128))
    feats = X
    for layer in resnet.features[:-2]:
        feats = layer(feats)
    f = feats[0].asnumpy()                         # (512, 3, 4)
    W = resnet.output.weight.data().asnumpy()      # (7, 512)
    b = resnet.output.bias.data().asnumpy()
    expected = np.einsum('ck,khw->chw', W, f) + b[:, None, None]
    assert np.abs(fcn(X)[0].asnumpy() - expected).max() < 1e-4
    # The features are shared with the classifier, not copied.
    assert fcn[0] is resnet.features[0]


def test_resize_to_multiple():
    img = np.zeros((600, 512, 3), dtype=np.uint8)
    # 512 -> 224 scales by 0.4375; 600 * 0.4375 = 262.5 is 8.2 blocks of 32 -> 256.
    assert clf.resize_to_multiple(img, 224).shape == (256, 224, 3)
    assert clf.resize_to_multiple(img, 448).shape == (512, 448, 3)
    assert clf.resize_to_multiple(img[:10, :10], 5).shape == (32, 32, 3)


def test_heatmaps_are_softmax_over_classes(resnet):
    fcn = clf.to_fully_convolutional(resnet)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(120, 90, 3), dtype=np.uint8)
    maps = clf.class_heatmaps(fcn, img, (64, 128))
    assert [m.shape for m in maps] == [(7, 3, 2), (7, 5, 4)]
    # Reference: the same input by hand, and a numpy softmax over axis 0.
    x = cv2.resize(img, (128, 160), interpolation=cv2.INTER_AREA) / 255.0
    x = (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    s = fcn(nd.array(x.transpose(2, 0, 1)[None]))[0].asnumpy()
    e = np.exp(s - s.max(axis=0))
    assert np.abs(maps[1].asnumpy() - e / e.sum(axis=0)).max() < 1e-4


def test_stable_softmax_against_float64_numpy():
    rng = np.random.default_rng(2)
    scores = rng.normal(scale=30, size=(2, 5, 3, 4))     # (N, C, h, w), some beyond 88
    z = scores.astype(np.float64)
    ref = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # float64: exp(300) fits
    got = clf.stable_softmax(nd.array(scores)).asnumpy()
    assert np.abs(got - ref).max() < 1e-6
    # In float32 the textbook formula overflows (exp(100) > 3.4e38): inf / inf.
    big = nd.array([[100.0, 90.0, 80.0]])
    e = nd.exp(big)
    assert np.isnan((e / e.sum(axis=1, keepdims=True)).asnumpy()).any()
    expected = np.exp([0.0, -10.0, -20.0]) / np.exp([0.0, -10.0, -20.0]).sum()
    assert np.allclose(clf.stable_softmax(big).asnumpy()[0], expected, rtol=1e-5)
    # Very negative scores underflow to 0 / 0 without the shift.
    assert np.allclose(clf.stable_softmax(-big).asnumpy()[0], expected[::-1], rtol=1e-5)
    # Along another axis, and in half precision, whose exp overflows beyond 11.1.
    half = nd.array([[29.0], [12.0], [-3.0]]).astype('float16')
    p = clf.stable_softmax(half, axis=0).asnumpy().ravel()
    assert np.isfinite(p).all() and abs(p.sum() - 1) < 1e-3 and p[0] > 0.99


def test_class_groups_of_the_stand_in_and_of_imagenet():
    groups = clf.class_groups(clf.STANDIN_CLASSES)
    names = {g: [clf.STANDIN_CLASSES[i] for i in ids] for g, ids in groups.items()}
    assert names == {'person': ['person'], 'animal': ['cat'],
                     'vehicle': ['aeroplane', 'bus'], 'indoor': ['potted plant']}
    # Every VOC object class is in exactly one group.
    members = sorted(c for g in clf.VOC_GROUPS.values() for c in g)
    assert members == sorted(VOC_CLASSES[1:])
    # ImageNet's dogs, found by name in the model zoo's class list.
    imagenet = clf.imagenet_classes()
    dogs = clf.class_groups(imagenet)['dog']
    assert len(dogs) == 118 and dogs == list(range(dogs[0], dogs[-1] + 1))
    assert imagenet[dogs[0]] == 'Chihuahua' and imagenet[dogs[-1]] == 'Mexican hairless'
    assert 'golden retriever' in [imagenet[i] for i in dogs]
    assert imagenet[dogs[0] - 1] == 'sea lion' and imagenet[dogs[-1] + 1] == 'timber wolf'


def test_group_heatmap_sums_the_group_by_hand():
    probs = nd.array([[[0.1, 0.5]], [[0.2, 0.1]], [[0.7, 0.4]]])  # (3 classes, 1, 2)
    assert np.allclose(clf.group_heatmap(probs, [0, 2]).asnumpy(), [[0.8, 0.9]])
    assert np.allclose(clf.group_heatmap(probs, [1]).asnumpy(), [[0.2, 0.1]])
    # The groups of a partition of the classes sum to 1 at every position.
    total = sum(clf.group_heatmap(probs, ids) for ids in ([0], [1, 2]))
    assert np.allclose(total.asnumpy(), 1)


def test_combinations_by_hand():
    p1 = nd.array([[[0.5]], [[0.5]]])              # (2 classes, 1, 1)
    p2 = nd.array([[[0.9]], [[0.1]]])
    arith = clf.combine_heatmaps([p1, p2], 'arithmetic')
    geo = clf.combine_heatmaps([p1, p2], 'geometric')
    assert np.allclose(arith.asnumpy().ravel(), [0.7, 0.3])
    # sqrt(.45) : sqrt(.05) = 3 : 1
    assert np.allclose(geo.asnumpy().ravel(), [0.75, 0.25], atol=1e-6)
    # A class ruled out at one size is vetoed by the geometric mean only.
    p3 = nd.array([[[1.0]], [[0.0]]])
    assert clf.combine_heatmaps([p2, p3], 'arithmetic')[1].asscalar() == pytest.approx(0.05)
    assert clf.combine_heatmaps([p2, p3], 'geometric')[1].asscalar() < 1e-4
    with pytest.raises(ValueError):
        clf.combine_heatmaps([p1], 'harmonic')


def test_combination_resizes_with_pixel_centres_aligned():
    rng = np.random.default_rng(1)
    small = rng.random((3, 2, 3)).astype(np.float32)
    big = rng.random((3, 4, 6)).astype(np.float32)
    out = clf.combine_heatmaps([nd.array(small), nd.array(big)]).asnumpy()
    ref = np.stack([cv2.resize(c, (6, 4), interpolation=cv2.INTER_LINEAR) for c in small])
    assert np.abs(out - (ref + big) / 2).max() < 1e-5


def pil_class_counts(voc_dir, split, min_pixels):
    """Objects and background windows per image, from the PNGs via PIL."""
    with open(os.path.join(voc_dir, 'ImageSets', 'Segmentation', split + '.txt')) as f:
        names = f.read().split()
    objects = 0
    for name in names:
        y = np.array(Image.open(os.path.join(voc_dir, 'SegmentationClass', name + '.png')))
        y[y == 255] = 0
        counts = np.bincount(y.ravel(), minlength=21)
        objects += sum(counts[c] >= min_pixels for c in SYNTHETIC_CLASSES)
    return objects, len(names)


def test_object_patches_one_per_object_class(small_voc_dir):
    X, y = clf.object_patches(small_voc_dir, True, size=32, min_pixels=150)
    y = y.asnumpy().astype(int)
    objects, images = pil_class_counts(small_voc_dir, 'train', 150)
    assert (y > 0).sum() == objects
    assert 0 < (y == 0).sum() <= images            # at most one background window each
    assert X.shape == (len(y), 3, 32, 32)
    assert set(y) <= set(range(len(clf.STANDIN_CLASSES)))


def test_batchnorm_refresh_runs_backward_passes(resnet):
    # MXNet updates BatchNorm's running statistics in backward: after 30
    # batches with momentum 0.9 the first layer's (a BatchNorm on the raw
    # input) running mean is within 0.9 ** 30 of the data's channel means.
    X = nd.random.uniform(2, 4, shape=(8, 3, 32, 32))
    clf._refresh_batchnorm(resnet, X, batch_size=4)
    expected = X.asnumpy().mean(axis=(0, 2, 3))
    got = resnet.features[0].running_mean.data().asnumpy()
    assert np.abs(got - expected).max() < 0.05 * expected.max()


def test_pretrained_weights_come_from_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    assert clf.pretrained_classifier() is None     # nothing cached: no download
    path = backbone_file()
    assert path.startswith(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    saved = vision.resnet18_v2()
    saved.initialize(mx.init.Xavier())
    saved(nd.zeros((1, 3, 32, 32)))                # finish deferred initialisation
    saved.save_parameters(path)
    got = clf.get_classifier()
    assert got.pretrained and path in got.note
    assert len(got.classes) == 1000 and got.classes[0] == 'tench'
    assert got.classes[1] == 'goldfish'
    assert np.array_equal(got.net.output.weight.data().asnumpy(),
                          saved.output.weight.data().asnumpy())


def test_stand_in_when_nothing_is_cached(tmp_path, monkeypatch, small_voc_dir):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    got = clf.get_classifier(small_voc_dir, num_epochs=1, size=32, bn_batches=2,
                             verbose=False)
    assert not got.pretrained
    assert got.note.startswith('STAND-IN') and backbone_file() in got.note
    assert got.summary.startswith('STAND-IN') and backbone_file() not in got.summary
    assert got.classes == ['background', 'aeroplane', 'bus', 'cat', 'person',
                           'potted plant']
    assert got.net.output.weight.shape == (6, 512)
    img, label, names = clf.standin_example(small_voc_dir)
    assert label.shape == img.shape[:2] and names[0] == 'background'
    objects = [n for n in names if n != 'background']
    fig = clf.heatmap_figure(got, img, (64, 96), objects, groups=['vehicle'])
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


TINY_STANDIN = dict(num_epochs=1, size=32, bn_batches=2, verbose=False)


def _refuse_training(*args, **kwargs):
    raise AssertionError('the cached stand-in should have been used')


def test_stand_in_file_is_trained_once_and_holds_the_trained_weights(
        tmp_path, monkeypatch, small_voc_dir):
    path = clf.standin_classifier_file(small_voc_dir, tmp_path, **TINY_STANDIN)
    assert os.path.dirname(path) == str(tmp_path) and path.endswith('.params')
    # Reference: the same training, run directly (seeded, so it repeats).
    net, acc = clf.train_standin_classifier(small_voc_dir, **TINY_STANDIN)
    saved = nd.load(path)
    for name, param in net._collect_params_with_prefix().items():
        np.testing.assert_allclose(saved[name].asnumpy(), param.data().asnumpy(),
                                   rtol=1e-4, atol=1e-5)
    assert clf._standin_accuracy(path) == pytest.approx(acc)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [os.path.basename(path), os.path.basename(path)[:-7] + '.json']), 'no temp files'
    # Same arguments, defaults spelled out or not: the file, without training.
    monkeypatch.setattr(clf, 'train_standin_classifier', _refuse_training)
    mtime = os.path.getmtime(path)
    again = clf.standin_classifier_file(small_voc_dir, tmp_path, lr=0.05, **TINY_STANDIN)
    assert again == path and os.path.getmtime(path) == mtime


def test_stand_in_file_is_keyed_by_arguments_and_complete_pairs(
        tmp_path, monkeypatch, small_voc_dir):
    calls = []

    def fake_training(voc_dir, **kwargs):
        calls.append(kwargs)
        net = vision.resnet18_v2(classes=len(clf.STANDIN_CLASSES))
        net.initialize()
        net(nd.zeros((1, 3, 32, 32)))
        return net, 0.5

    monkeypatch.setattr(clf, 'train_standin_classifier', fake_training)
    a = clf.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=1)
    b = clf.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=2)
    assert a != b and len(calls) == 2
    os.remove(a[:-7] + '.json')  # e.g. killed between the two writes
    assert clf.standin_classifier_file(small_voc_dir, tmp_path, num_epochs=1) == a
    assert len(calls) == 3 and clf._standin_accuracy(a) == 0.5


def test_stand_in_file_is_a_backbone_and_get_classifier_reuses_it(
        tmp_path, monkeypatch, small_voc_dir):
    from d2lfcn.model import get_fcn
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('D2LFCN_DATA', str(tmp_path / 'data'))
    path = clf.standin_classifier_file(small_voc_dir, **TINY_STANDIN)
    assert path.startswith(str(tmp_path / 'data'))
    monkeypatch.setattr(clf, 'train_standin_classifier', _refuse_training)
    got = clf.get_classifier(small_voc_dir, **TINY_STANDIN)
    assert f'{clf._standin_accuracy(path):.2f}' in got.note
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
        net = vision.resnet18_v2(classes=len(clf.STANDIN_CLASSES))
        net.initialize()
        net(nd.zeros((1, 3, 32, 32)))
        return net, 0.5

    monkeypatch.setattr(clf, 'train_standin_classifier', fake_training)
    blocker = tmp_path / 'a-file'
    blocker.write_text('not a folder')
    with pytest.raises(UserError, match='a-file.*D2LFCN_DATA'):
        clf.standin_classifier_file(small_voc_dir, blocker / 'data')
    # The dataset's parent folder names the same dataset, and the same file.
    parent = os.path.dirname(os.path.dirname(small_voc_dir))   # holds VOCdevkit
    assert (clf.standin_classifier_file(parent, tmp_path / 'd')
            == clf.standin_classifier_file(small_voc_dir, tmp_path / 'd'))
