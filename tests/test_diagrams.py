"""Test d2lfcn.diagrams: the figures show the right numbers, shapes and colours.

References: hand-computed values (D2L's transposed-convolution examples),
Gluon's resnet18_v2 run forward for the architecture's shapes, the VOC
devkit's colour-map algorithm written out here, PIL's own palette decoding,
and OpenCV's bilinear resize.
"""
import os

import cv2
import matplotlib
import numpy as np
import pytest
from matplotlib.patches import Rectangle
from mxnet import nd
from mxnet.gluon.model_zoo import vision
from PIL import Image

matplotlib.use('Agg')

from d2lfcn import diagrams  # noqa: E402
from d2lfcn.plotting import save_figure  # noqa: E402


def numbers(fig):
    """Return every number drawn as text in `fig`, sorted."""
    out = []
    for ax in fig.axes:
        for t in ax.texts:
            try:
                out.append(float(t.get_text()))
            except ValueError:
                pass
    return sorted(out)


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


# D2L's example: X = K = [[0, 1], [2, 3]].
X = [0, 1, 2, 3]
K = [0, 1, 2, 3]
COPIES = [x * k for x in X for k in K]  # each input element scales the kernel


@pytest.mark.parametrize('kwargs, output', [
    ({}, [[0, 0, 1], [0, 4, 6], [4, 12, 9]]),
    (dict(strides=2), [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3], [4, 6, 6, 9]]),
    # padding 1 removes the border of the stride-1 sum: only its centre, 4, is left
    (dict(padding=1), [[0, 0, 1], [0, 4, 6], [4, 12, 9], [4]]),
])
def test_trans_conv_figure_draws_hand_computed_values(kwargs, output):
    fig = diagrams.draw_trans_conv(**kwargs)
    flat = [v for row in output for v in row]
    assert numbers(fig) == sorted(X + K + COPIES + flat)


def test_conv_as_matrix_figure():
    fig = diagrams.draw_conv_as_matrix()
    x = list(range(9))
    y = [27, 37, 57, 67]  # corr2d(arange(9).reshape(3, 3), [[1, 2], [3, 4]]), by hand
    # W built by hand: row (i, j) holds the kernel at the window starting at (i, j).
    W = np.zeros((4, 9))
    for r, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        for a in range(2):
            for b in range(2):
                W[r, (i + a) * 3 + j + b] = [[1, 2], [3, 4]][a][b]
    z = W.T @ np.array(y)
    kernel_entries = [1, 2, 3, 4] * 4  # the non-zero entries of W (and of W.T)
    assert numbers(fig) == sorted(kernel_entries * 2 + x + y * 2 + z.tolist())
    assert z.tolist() == [27, 91, 74, 138, 400, 282, 171, 429, 268]


@pytest.mark.parametrize('height, width', [(320, 480), (224, 160)])
def test_fcn_architecture_shapes_match_gluon(height, width):
    net = vision.resnet18_v2()
    net.initialize()
    x = nd.zeros((1, 3, height, width))
    shapes = []
    for i, layer in enumerate(net.features[:-2]):
        x = layer(x)
        if i in (5, 6, 7, 8):  # the four ResNet stages
            shapes.append(x.shape[1:])
    labels = texts(diagrams.draw_fcn_architecture(height, width))
    for c, h, w in shapes:
        assert f'{c} x {h} x {w}' in labels
    h, w = shapes[-1][1:]
    assert f'21 x {h} x {w}' in labels
    assert f'21 x {height} x {width}' in labels and f'{height} x {width}' in labels


def devkit_colormap(n=256):
    """VOC devkit's labelcolormap.m: bit j of the index sets bit 7-j/3 of R, G, B."""
    cmap = np.zeros((n, 3), dtype=int)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def test_voc_legend_colours_are_the_devkit_colours():
    fig = diagrams.draw_voc_legend()
    swatches = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
    colours = [tuple(int(round(255 * v)) for v in p.get_facecolor()[:3]) for p in swatches]
    cmap = devkit_colormap()
    assert colours == [tuple(c) for c in cmap[:21]] + [tuple(cmap[255])]
    labels = texts(fig)
    assert any(t.split() == ['20', 'tv/monitor'] for t in labels)
    assert any(t.split() == ['255', 'void'] for t in labels)


def test_voc_samples_show_images_labels_and_overlays(small_voc_dir):
    fig = diagrams.draw_voc_samples(small_voc_dir, num=3)
    axes = np.array(fig.axes).reshape(3, 3)
    with open(os.path.join(small_voc_dir, 'ImageSets', 'Segmentation', 'train.txt')) as f:
        names = f.read().split()[:3]
    for c, name in enumerate(names):
        img = np.array(Image.open(os.path.join(small_voc_dir, 'JPEGImages', name + '.jpg')))
        png = Image.open(os.path.join(small_voc_dir, 'SegmentationClass', name + '.png'))
        label_rgb = np.array(png.convert('RGB'))  # PIL applies the file's palette
        shown = [np.asarray(axes[r, c].images[0].get_array()) for r in range(3)]
        assert np.abs(shown[0].astype(int) - img.astype(int)).max() <= 3  # JPEG decoders
        assert (shown[1] == label_rgb).all()
        background = (np.array(png) == 0)
        assert np.abs(shown[2][background].astype(int) - shown[0][background]).max() == 0
        assert (shown[2][~background] != shown[0][~background]).any()


def test_bilinear_upsampling_figure_matches_opencv():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    fig = diagrams.draw_bilinear_upsampling(img, zoom=(slice(5, 15), slice(5, 20)))
    out = np.asarray(fig.axes[1].images[0].get_array()).astype(float)
    ref = cv2.resize(img.astype(np.float32), (100, 80), interpolation=cv2.INTER_LINEAR)
    assert out.shape == (80, 100, 3)
    assert np.abs(out[1:-1, 1:-1] - ref[1:-1, 1:-1]).max() <= 1  # rounding to uint8


def test_save_figure_is_atomic(tmp_path):
    fig = diagrams.draw_voc_legend()
    path = save_figure(fig, str(tmp_path / 'sub' / 'legend.png'))
    with Image.open(path) as im:
        assert im.format == 'PNG' and im.size[0] > 100
    with pytest.raises(ValueError):  # matplotlib knows no .xyz format
        save_figure(diagrams.draw_voc_legend(), str(tmp_path / 'bad.xyz'))
    assert sorted(os.listdir(tmp_path)) == ['sub']
    assert os.listdir(tmp_path / 'sub') == ['legend.png']


@pytest.mark.parametrize('height, width', [(320, 480), (96, 64)])
def test_fcn_variants_draw_the_shapes_gluon_computes(height, width):
    from d2lfcn.model import FCN_ARCHS, get_fcn
    fig = diagrams.draw_fcn_variants(height, width)
    assert len(fig.axes) == 3
    for ax, arch in zip(fig.axes, FCN_ARCHS):
        net = get_fcn(21, pretrained_base=False, arch=arch)
        X = nd.zeros((1, 3, height, width))
        expected, x = [X.shape[1:]], X
        for i, layer in enumerate(net.features):
            x = layer(x)
            if i in (1, 5, 6, 7, 8):  # conv0, then the four ResNet stages
                expected.append(x.shape[1:])
        scores = net.score(x)
        expected.append(scores.shape[1:])
        if arch != 'fcn32s':
            scores = net.up32to16(scores)
            expected.append(scores.shape[1:])
        if arch == 'fcn8s':
            expected.append(net.up16to8(scores).shape[1:])
        expected.append(net(X).shape[1:])
        drawn = [t.get_text() for t in ax.texts if ' x ' in t.get_text()]
        assert drawn == [f'{c}\n{h} x {w}' for c, h, w in expected], arch
        skips = sorted(t.get_text() for t in ax.texts if t.get_text().startswith('skip'))
        assert skips == {'fcn32s': [], 'fcn16s': ['skip: 1x1 conv of stage3'],
                         'fcn8s': ['skip: 1x1 conv of stage2',
                                   'skip: 1x1 conv of stage3']}[arch]
        assert ax.texts[0].get_text() == 'FCN-' + arch[3:]
