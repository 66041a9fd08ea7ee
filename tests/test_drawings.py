"""Test d2lfcn.drawings: the figures show the right numbers, shapes and colours.

References: hand-computed values (D2L's transposed-convolution examples),
Gluon's resnet18_v2 run forward for the architecture's shapes, the VOC
devkit's colour-map algorithm written out here, PIL's own palette decoding,
and OpenCV's bilinear resize.
"""
import os

import cv2
import matplotlib
import matplotlib.colors
import numpy as np
import pytest
from matplotlib.patches import Rectangle
from mxnet import init, nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import vision
from PIL import Image

matplotlib.use('Agg')

from d2lfcn import drawings  # noqa: E402
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
    fig = drawings.draw_trans_conv(**kwargs)
    flat = [v for row in output for v in row]
    assert numbers(fig) == sorted(X + K + COPIES + flat)


def test_conv_as_matrix_figure():
    fig = drawings.draw_conv_as_matrix()
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
    labels = texts(drawings.draw_fcn_architecture(height, width))
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
    fig = drawings.draw_voc_legend()
    swatches = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]
    colours = [tuple(int(round(255 * v)) for v in p.get_facecolor()[:3]) for p in swatches]
    cmap = devkit_colormap()
    assert colours == [tuple(c) for c in cmap[:21]] + [tuple(cmap[255])]
    labels = texts(fig)
    assert any(t.split() == ['20', 'tv/monitor'] for t in labels)
    assert any(t.split() == ['255', 'void'] for t in labels)


def test_voc_samples_show_images_labels_and_overlays(small_voc_dir):
    fig = drawings.draw_voc_samples(small_voc_dir, num=3)
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
    fig = drawings.draw_bilinear_upsampling(img, zoom=(slice(5, 15), slice(5, 20)))
    out = np.asarray(fig.axes[1].images[0].get_array()).astype(float)
    ref = cv2.resize(img.astype(np.float32), (100, 80), interpolation=cv2.INTER_LINEAR)
    assert out.shape == (80, 100, 3)
    assert np.abs(out[1:-1, 1:-1] - ref[1:-1, 1:-1]).max() <= 1  # rounding to uint8


def test_save_figure_is_atomic(tmp_path):
    fig = drawings.draw_voc_legend()
    path = save_figure(fig, str(tmp_path / 'sub' / 'legend.png'))
    with Image.open(path) as im:
        assert im.format == 'PNG' and im.size[0] > 100
    with pytest.raises(ValueError):  # matplotlib knows no .xyz format
        save_figure(drawings.draw_voc_legend(), str(tmp_path / 'bad.xyz'))
    assert sorted(os.listdir(tmp_path)) == ['sub']
    assert os.listdir(tmp_path / 'sub') == ['legend.png']


# ---------------------------------------------------- conv-layer and transposed-conv


def outlines(fig):
    """Return (x, y, w, h) of every unfilled rectangle: the highlighted windows."""
    return [(p.get_x(), p.get_y(), p.get_width(), p.get_height()) for ax in fig.axes
            for p in ax.patches if isinstance(p, Rectangle) and not p.get_fill()]


def sliding_window(P, K, stride=(1, 1)):
    """The textbook cross-correlation, one window at a time."""
    P, K = np.asarray(P, dtype=float), np.asarray(K, dtype=float)
    (kh, kw), (sh, sw) = K.shape, stride
    rows, cols = (P.shape[0] - kh) // sh + 1, (P.shape[1] - kw) // sw + 1
    return np.array([[(P[i * sh:i * sh + kh, j * sw:j * sw + kw] * K).sum()
                      for j in range(cols)] for i in range(rows)])


EX_X = np.arange(9).reshape(3, 3)
EX_K = np.array([[0, 1], [2, 3]])


def test_conv_example_figure_is_d2ls_example():
    fig = drawings.draw_conv(highlight=((0, 0), (1, 1)))
    assert numbers(fig) == sorted(list(range(9)) + [0, 1, 2, 3] + [19, 25, 37, 43])
    assert '0×0 + 1×1 + 3×2 + 4×3 = 19' in texts(fig)
    assert '4×0 + 5×1 + 7×2 + 8×3 = 43' in texts(fig)


def test_conv_padding_figure_pads_with_zeros():
    fig = drawings.draw_conv(padding=1, highlight=((0, 1),))
    P = np.pad(EX_X, 1)
    out = sliding_window(P, EX_K)
    assert out.shape == (4, 4)
    assert numbers(fig) == sorted(P.ravel().tolist() + EX_K.ravel().tolist()
                                  + out.ravel().tolist())
    assert '0×0 + 0×1 + 0×2 + 1×3 = 3' in texts(fig)   # the window at output (0, 1)
    [(x, y, w, h)] = outlines(fig)
    assert (w, h) == (2, 2)
    grey = [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)
            and p.get_fill() and np.allclose(p.get_facecolor()[:3], 217 / 255)]
    assert len(grey) == 25 - 9                          # the padding ring


def test_conv_stride_figure_is_d2ls_example():
    fig = drawings.draw_conv(padding=1, strides=(3, 2), highlight=((0, 1), (1, 0)))
    P = np.pad(EX_X, 1)
    assert numbers(fig) == sorted(P.ravel().tolist() + EX_K.ravel().tolist() + [0, 8, 6, 8])
    assert '0×0 + 0×1 + 1×2 + 2×3 = 8' in texts(fig)
    assert '0×0 + 6×1 + 0×2 + 0×3 = 6' in texts(fig)
    (x0, y0, *_), (x1, y1, *_) = outlines(fig)
    assert (x0 - x1, y1 - y0) == (2, 3)                # windows a stride apart


def test_multi_channel_figures_are_d2ls_examples():
    X1 = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    K1 = [1, 2, 3, 4]
    fig = drawings.draw_conv_multi_in()
    parts = [19, 25, 37, 43] + [37, 47, 67, 77]        # each channel on its own
    assert numbers(fig) == sorted(list(range(9)) + X1 + [0, 1, 2, 3] + K1 + parts
                                  + [56, 72, 104, 120])
    assert 'output: 19 + 37 = 56' in texts(fig)
    fig = drawings.draw_conv_multi_out()
    kernels = [0, 1, 2, 3] + K1
    kernels = kernels + [v + 1 for v in kernels] + [v + 2 for v in kernels]
    outputs = [56, 72, 104, 120, 76, 100, 148, 172, 96, 128, 192, 224]
    assert numbers(fig) == sorted(list(range(9)) + X1 + kernels + outputs)


def test_receptive_field_figure_matches_resnet18():
    net = vision.resnet18_v2()
    net.initialize()
    stage4 = net.features[:9](nd.zeros((1, 3, 320, 480))).shape[2:]
    assert stage4 == (10, 15)
    fig = drawings.draw_receptive_field(320, 480, cell=(5, 10))
    left, right = fig.axes[:2]
    size, jump = left.lines[0].get_ydata(), left.lines[1].get_ydata()
    assert len(size) == 18                             # 17 convs on the main path + 1 pool
    assert [size[i] for i in (5, 9, 13, 17)] == [43, 99, 211, 435]
    assert [jump[i] for i in (5, 9, 13, 17)] == [4, 8, 16, 32]
    dots = right.lines[0]
    assert len(dots.get_xdata()) == 10 * 15
    assert sorted(set(dots.get_ydata())) == [32 * i for i in range(10)]
    assert sorted(set(dots.get_xdata())) == [32 * j for j in range(15)]
    squares = {p.get_width() for p in right.patches if isinstance(p, Rectangle)}
    assert {43, 99, 211, 435, 32} <= squares
    centre = [(p.get_x() + p.get_width() / 2, p.get_y() + p.get_height() / 2)
              for p in right.patches if p.get_width() in (43, 435)]
    assert centre == [(32 * 10, 32 * 5)] * 2  # imshow puts pixel (r, c) at y=r, x=c


def test_trans_conv_output_padding_figure_is_the_worked_example():
    X, K = [[1, 2], [3, 4]], np.arange(9).reshape(3, 3)
    fig = drawings.draw_trans_conv(X, K, strides=2, padding=1, output_padding=1)
    layer = nn.Conv2DTranspose(1, 3, strides=2, padding=1, output_padding=1, use_bias=False)
    layer.initialize(init.Constant(nd.array(K).reshape((1, 1, 3, 3))))
    out = layer(nd.array(X).reshape((1, 1, 2, 2)))[0, 0].asnumpy()
    full = np.zeros((5, 5))
    for i in range(2):
        for j in range(2):
            full[2 * i:2 * i + 3, 2 * j:2 * j + 3] += X[i][j] * K
    copies = [X[i][j] * k for i in range(2) for j in range(2) for k in K.ravel()]
    assert numbers(fig) == sorted([1, 2, 3, 4] + K.ravel().tolist() + copies
                                  + full.ravel().tolist() + out.ravel().tolist())
    np.testing.assert_array_equal(out, full[1:, 1:])   # cut top/left, kept bottom/right


def test_trans_conv_as_conv_figure_stretches_and_flips():
    fig = drawings.draw_trans_conv_as_conv()
    stretched = np.zeros((6, 6))
    stretched[1:4:2, 1:4:2] = [[1, 2], [3, 4]]
    out = sliding_window(stretched, np.arange(9).reshape(3, 3)[::-1, ::-1])
    assert out.tolist() == [[4, 11, 8, 10], [10, 26, 18, 24], [12, 27, 16, 20],
                            [21, 48, 28, 32]]
    assert numbers(fig) == sorted(stretched.ravel().tolist() + list(range(9))
                                  + out.ravel().tolist())
    colours = [tuple(p.get_facecolor()[:3]) for ax in fig.axes for p in ax.patches
               if isinstance(p, Rectangle) and p.get_fill()]
    inserted = matplotlib.colors.to_rgb('#fff2cc')
    padding = matplotlib.colors.to_rgb('#d9d9d9')
    assert colours.count(inserted) == 3 * 3 - 4        # zeros between the 4 elements
    assert colours.count(padding) == 36 - 9
def hand_label():
    """A 40 x 60 label: two people (15) and a cat (8), each ringed by void."""
    ids = np.zeros((40, 60), dtype=np.uint8)
    for cls, (top, left, bottom, right) in [(15, (4, 4, 20, 14)), (15, (22, 40, 38, 56)),
                                            (8, (5, 25, 30, 35))]:
        ids[top - 1:bottom + 1, left - 1:right + 1] = 255
        ids[top:bottom, left:right] = cls
    return ids


def test_segmentation_tasks_boxes_masks_and_instances():
    ids = hand_label()
    image = np.full(ids.shape + (3,), 90, dtype=np.uint8)
    regions = drawings.object_regions(ids)
    assert sorted((c, int(m.sum())) for c, m in regions) == [(8, 250), (15, 160), (15, 256)]
    fig = drawings.draw_segmentation_tasks(image, ids, 'embedded dataset')
    classify, detect, semantic, instance = fig.axes
    assert classify.get_title().splitlines() == ['image classification', 'cat, person']
    boxes = sorted((r.get_x(), r.get_y(), r.get_width(), r.get_height())
                   for r in detect.patches)
    # Each box is the object's extent, drawn around whole pixels.
    assert boxes == [(3.5, 3.5, 10, 16), (24.5, 4.5, 10, 25), (39.5, 21.5, 16, 16)]
    assert sorted(t.get_text() for t in detect.texts) == ['cat', 'person', 'person']
    cmap = devkit_colormap()
    assert (np.asarray(semantic.images[0].get_array()) == cmap[ids]).all()
    shown = np.asarray(instance.images[0].get_array()).reshape(-1, 3)
    colours = {tuple(shown[m.ravel()][0]) for _, m in regions}
    for _, m in regions:  # one colour per object, nowhere else
        assert (shown[m.ravel()] == shown[m.ravel()][0]).all()
    assert len(colours) == 3 and (0, 0, 0) not in colours
    assert 'embedded dataset' in fig.texts[0].get_text()


def test_task_example_reads_the_label_file(small_voc_dir):
    image, ids = drawings.task_example(small_voc_dir)
    with open(os.path.join(small_voc_dir, 'ImageSets', 'Segmentation', 'train.txt')) as f:
        names = f.read().split()
    pngs = [np.array(Image.open(os.path.join(small_voc_dir, 'SegmentationClass', n + '.png')))
            for n in names]
    assert any(p.shape == ids.shape and (p == ids).all() for p in pngs)
    assert image.shape == ids.shape + (3,)
@pytest.mark.parametrize('height, width', [(320, 480), (96, 64)])
def test_fcn_variants_draw_the_shapes_gluon_computes(height, width):
    from d2lfcn.model import FCN_ARCHS, get_fcn
    fig = drawings.draw_fcn_variants(height, width)
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
