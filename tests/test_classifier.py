"""Test d2lfcn.classifier: the fully convolutional classifier and its heatmaps.

References: Gluon's own resnet18_v2 classifier (the converted network must
average to its output), plain numpy for the 1x1 convolution and the
softmax, hand-computed combinations, OpenCV's bilinear resize, and the
model zoo's ImageNet class list.
"""
import cv2
import numpy as np
import pytest
from mxnet import nd

from d2lfcn import classifier as clf
from d2lfcn.book.patches import STANDIN_CLASSES
from d2lfcn.voc import VOC_CLASSES


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
    groups = clf.class_groups(STANDIN_CLASSES)
    names = {g: [STANDIN_CLASSES[i] for i in ids] for g, ids in groups.items()}
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


def test_groups_found_by_hand():
    probs = nd.array([[[0.1, 0.5]], [[0.3, 0.1]], [[0.3, 0.1]], [[0.3, 0.3]]])  # (4, 1, 2)
    groups = {'one': [0], 'pair': [1, 2], 'rest': [0, 3], 'other': [1, 3]}
    # pair: 0.6 and 0.2; rest: 0.4 and 0.8; other: 0.6 and 0.4; 'one' is a class.
    assert clf.groups_found(probs, groups) == ['pair', 'rest', 'other']
    assert clf.groups_found(probs, groups, threshold=0.7) == ['rest']
    assert clf.groups_found(probs, {}) == []


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

