"""Test whole-image prediction, label colouring and the predict CLI."""
import os
import subprocess
import sys

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet import nd
from mxnet.gluon import nn

from d2lfcn.cli import run_cli
from d2lfcn.inference import label2image, overlay
from d2lfcn.inference import predict_image as predict
from d2lfcn.model import get_fcn
from d2lfcn.predict import main
from d2lfcn.segmaps import voc_palette

MEAN = np.array([0.485, 0.456, 0.406])  # ImageNet statistics, written out here
STD = np.array([0.229, 0.224, 0.225])


def _image(h, w, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(h, w, 3)).astype(np.uint8)


@pytest.fixture(scope='module')
def fcn():
    mx.random.seed(0)
    return get_fcn(num_classes=3, pretrained_base=False)


@pytest.mark.parametrize('h, w', [(37, 53), (100, 75), (32, 64)])
@pytest.mark.parametrize('mode', ['pad', 'tile'])
def test_label_map_has_the_input_size(fcn, h, w, mode):
    pred = predict(fcn, _image(h, w), mode=mode, tile_size=(64, 64))
    assert pred.shape == (h, w) and pred.dtype == np.int32
    assert pred.min() >= 0 and pred.max() < 3


class PixelNet(nn.HybridBlock):
    """Scores each pixel from its own colour (a 1x1 conv), optionally plus the
    mean colour of the whole window it is given."""

    def __init__(self, add_window_mean=False, **kwargs):
        super().__init__(**kwargs)
        self.add_window_mean = add_window_mean
        self.conv = nn.Conv2D(3, kernel_size=1, in_channels=3)

    def hybrid_forward(self, F, x):
        y = self.conv(x)
        if self.add_window_mean:
            y = F.broadcast_add(y, F.mean(x, axis=(2, 3), keepdims=True))
        return y


def _pixel_net(add_window_mean=False):
    net = PixelNet(add_window_mean)
    rng = np.random.RandomState(1)
    net.initialize()
    W, b = rng.randn(3, 3).astype('float32'), rng.randn(3).astype('float32')
    net.conv.weight.set_data(nd.array(W[:, :, None, None]))
    net.conv.bias.set_data(nd.array(b))
    return net, W, b


def _normalised(img):
    return (img / 255.0 - MEAN) / STD  # (H, W, 3)


@pytest.mark.parametrize('h, w', [(37, 53), (100, 150), (20, 300)])
def test_pad_and_tile_agree_with_numpy_for_a_per_pixel_model(h, w):
    net, W, b = _pixel_net()
    img = _image(h, w, seed=h)
    expected = (_normalised(img) @ W.T + b).argmax(axis=2)
    np.testing.assert_array_equal(predict(net, img, mode='pad'), expected)
    # Windows of 64x96 with several overlaps: every tile offset must line up.
    for overlap in (0, 0.25, 0.5):
        np.testing.assert_array_equal(
            predict(net, img, mode='tile', tile_size=(64, 96), overlap=overlap),
            expected)


def test_tile_scores_are_averaged_over_overlapping_windows():
    """A window-dependent model: the average is checked with windows by hand."""
    net, W, b = _pixel_net(add_window_mean=True)
    img = _image(40, 70, seed=7)
    x = _normalised(img)
    # tile (32, 64), overlap 0.5: row stride 16 -> rows [0, 32) and [8, 40)
    # (the last window flush with the bottom); column stride 32 -> [0, 64), [6, 70).
    windows = [(r, c) for r in (slice(0, 32), slice(8, 40))
               for c in (slice(0, 64), slice(6, 70))]
    total, count = np.zeros((40, 70, 3)), np.zeros((40, 70, 1))
    for r, c in windows:
        total[r, c] += x[r, c] @ W.T + b + x[r, c].mean(axis=(0, 1))
        count[r, c] += 1
    expected = (total / count).argmax(axis=2)
    got = predict(net, img, mode='tile', tile_size=(32, 64), overlap=0.5)
    np.testing.assert_array_equal(got, expected)
    # The window term matters: scoring the whole padded image differs.
    assert (predict(net, img, mode='pad') != expected).any()


def test_ndarray_in_ndarray_out(fcn):
    img = _image(37, 53)
    pred = predict(fcn, nd.array(img, dtype='uint8'))
    assert isinstance(pred, nd.NDArray)
    np.testing.assert_array_equal(pred.asnumpy(), predict(fcn, img))


def test_bad_arguments_raise(fcn):
    with pytest.raises(ValueError):
        predict(fcn, _image(32, 32)[:, :, 0])
    with pytest.raises(ValueError):
        predict(fcn, _image(32, 32), mode='zoom')
    with pytest.raises(ValueError):
        predict(fcn, _image(32, 32), mode='tile', tile_size=(40, 64))


def test_label2image_uses_the_voc_colours():
    pred = [[0, 1, 2], [15, 20, 255]]
    expected = [[[0, 0, 0], [128, 0, 0], [0, 128, 0]],            # background, aeroplane, bicycle
                [[192, 128, 128], [0, 64, 128], [224, 224, 192]]]  # person, tv/monitor, void
    out = label2image(np.array(pred))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    out = label2image(nd.array(pred))
    assert isinstance(out, nd.NDArray)
    np.testing.assert_array_equal(out.asnumpy(), expected)


def test_overlay_blends_all_but_background():
    img = np.full((1, 3, 3), 100, dtype=np.uint8)
    out = overlay(img, np.array([[0, 1, 15]]), alpha=0.5)
    # background kept; aeroplane (128, 0, 0) and person (192, 128, 128) half-blended
    np.testing.assert_array_equal(out, [[[100, 100, 100], [114, 50, 50], [146, 114, 114]]])


# ------------------------------------------------------------------ the CLI

@pytest.fixture(scope='module')
def params(tmp_path_factory, fcn):
    path = tmp_path_factory.mktemp('params') / 'fcn.params'
    fcn.save_parameters(str(path))
    return str(path)


def _jpeg(folder, name, h=50, w=70):
    path = str(folder / name)
    cv2.imwrite(path, cv2.cvtColor(_image(h, w), cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.slow
def test_cli_end_to_end(tmp_path, params, fcn):
    img = _jpeg(tmp_path, 'cat.jpg')
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, '-m', 'd2lfcn.predict', img, '--params', params,
         '--out-dir', str(out), '--num-classes', '3'],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ['cat_label.png', 'cat_overlay.png']
    label = cv2.cvtColor(cv2.imread(str(out / 'cat_label.png')), cv2.COLOR_BGR2RGB)
    rgb = cv2.cvtColor(cv2.imread(img), cv2.COLOR_BGR2RGB)
    # The PNG holds exactly the colours of this process's prediction (lossless).
    pred = predict(fcn, rgb)
    np.testing.assert_array_equal(label, label2image(pred))
    # The overlay: the blended photo, then a legend of one row per class shown.
    shown = [c for c in np.unique(pred) if c != 0]
    overlaid = cv2.cvtColor(cv2.imread(str(out / 'cat_overlay.png')), cv2.COLOR_BGR2RGB)
    assert overlaid.shape == (50 + 6 + 18 * len(shown), 70, 3)
    np.testing.assert_array_equal(overlaid[:50], overlay(rgb, pred))
    legend = overlaid[50:].reshape(-1, 3)
    for c in shown:  # a swatch of each class's colour; numbered classes: 3 scores
        assert (legend == voc_palette()[c]).all(axis=1).any(), c


@pytest.mark.slow
def test_cli_file_names_that_are_not_utf8(tmp_path, params, fcn):
    # cv2.imread/imwrite crashed on these names (segmentation fault).
    img = str(tmp_path / os.fsdecode(b'bad\xffname.jpg'))
    cv2.imencode('.jpg', _image(40, 60))[1].tofile(img)
    out = tmp_path / os.fsdecode(b'out\xfe')
    proc = subprocess.run(
        [sys.executable, '-m', 'd2lfcn.predict', img, '--params', params,
         '--out-dir', str(out), '--num-classes', '3'], capture_output=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    stem = os.fsdecode(b'bad\xffname')
    assert sorted(os.listdir(out)) == [f'{stem}_label.png', f'{stem}_overlay.png']
    rgb = cv2.imdecode(np.fromfile(img, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    label = cv2.imdecode(np.fromfile(str(out / f'{stem}_label.png'), np.uint8),
                         cv2.IMREAD_COLOR)[:, :, ::-1]
    np.testing.assert_array_equal(label, label2image(predict(fcn, rgb)))


def test_cli_missing_image_exits_2_and_writes_nothing(tmp_path, params):
    img = _jpeg(tmp_path, 'ok.jpg')
    out = tmp_path / 'out'
    proc = subprocess.run(
        [sys.executable, '-m', 'd2lfcn.predict', img, str(tmp_path / 'missing.jpg'),
         '--params', params, '--out-dir', str(out), '--num-classes', '3'],
        capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f'error: image {tmp_path / "missing.jpg"} does not exist']
    assert not out.exists()


def _run(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(main, argv)
    err = capsys.readouterr().err
    return e.value.code, err


def test_cli_errors_are_one_line(tmp_path, params, capsys):
    img = _jpeg(tmp_path, 'ok.jpg')
    bad_img = tmp_path / 'bad.jpg'
    bad_img.write_text('not a jpeg')
    corrupt = tmp_path / 'corrupt.params'
    corrupt.write_bytes(os.urandom(200))
    out = str(tmp_path / 'out')
    cases = [
        ([str(bad_img), '--params', params, '--num-classes', '3'], 'unreadable image'),
        ([str(tmp_path), '--params', params, '--num-classes', '3'], 'is not a file'),
        ([img, '--params', str(tmp_path / 'none.params')], 'does not exist'),
        ([img, '--params', str(corrupt)], 'corrupt'),
        ([img, '--params', params, '--num-classes', '21'],
         'is for 3 classes, not 21; pass --num-classes 3'),
        ([img, '--params', str(tmp_path)], f'params file {tmp_path} is a folder'),
        ([img, '--params', params, '--alpha', 'nan'], '--alpha nan: must lie in [0, 1]'),
        ([img, '--params', params, '--alpha', '5'], '--alpha 5.0: must lie in [0, 1]'),
        ([img, '--params', params, '--gpus', '-1'], 'MXNet sees 0 GPU(s)'),
        ([img, '--params', params, '--gpus', '0'], 'MXNet sees 0 GPU(s)'),
    ]
    for argv, message in cases:
        code, err = _run(argv + ['--out-dir', out], capsys)
        assert code == 2
        assert len(err.splitlines()) == 1 and err.startswith('error: ') and message in err
    assert not os.path.exists(out)
    code, err = _run([img, '--params', params, '--num-classes', '3',
                      '--out-dir', str(bad_img)], capsys)
    assert code == 2 and err == f'error: --out-dir {bad_img}: is a file, not a folder\n'


def test_cli_help_names_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(['--help'])
    assert e.value.code == 0
    text = ' '.join(capsys.readouterr().out.split())
    for flag in ('--params', '--out-dir', '--arch', '--num-classes', '--mode',
                 '--tile-size', '--overlap', '--gpus', '--alpha'):
        assert flag in text
    for default in ('(default: .)', '21 for VOC)', '(default: the one they hold)',
                    'the CPU when there is none)', '(default: pad)',
                    '(default: 320 480', '(default: 0.5)'):
        assert default in text


# ------------------------------------------------------------ --arch

@pytest.fixture(scope='module')
def fcn8s_run(tmp_path_factory):
    """A saved fcn8s (3 classes) with a nonzero stride-8 skip, like a trained one."""
    mx.random.seed(5)
    net = get_fcn(num_classes=3, pretrained_base=False, arch='fcn8s')
    net(nd.zeros((1, 3, 32, 32)))  # finish the deferred initialisation
    rng = np.random.RandomState(5)
    net.score8.weight.set_data(nd.array(0.05 * rng.randn(*net.score8.weight.shape)))
    folder = tmp_path_factory.mktemp('fcn8s')
    net.save_parameters(str(folder / 'best.params'))
    return net, folder


def _label_png(path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_cli_arch_predicts_with_the_skip_network(tmp_path, fcn8s_run, capsys):
    net, folder = fcn8s_run
    img = _jpeg(tmp_path, 'cat.jpg', h=70, w=90)
    rgb = cv2.cvtColor(cv2.imread(img), cv2.COLOR_BGR2RGB)
    expected = label2image(predict(net, rgb))
    params = str(folder / 'best.params')
    run_cli(main, [img, '--params', params, '--arch', 'fcn8s', '--num-classes', '3',
                   '--out-dir', str(tmp_path / 'flags')])
    np.testing.assert_array_equal(_label_png(tmp_path / 'flags' / 'cat_label.png'), expected)
    # Without flags, arch and classes are the ones the weights hold.
    run_cli(main, [img, '--params', params, '--out-dir', str(tmp_path / 'plain')])
    np.testing.assert_array_equal(_label_png(tmp_path / 'plain' / 'cat_label.png'), expected)


def test_cli_wrong_arch_is_one_line_and_writes_nothing(tmp_path, fcn8s_run, capsys):
    _, folder = fcn8s_run
    img = _jpeg(tmp_path, 'ok.jpg')
    out = tmp_path / 'out'
    params = str(folder / 'best.params')
    for arch in ('fcn32s', 'fcn16s'):
        code, err = _run([img, '--params', params, '--num-classes', '3',
                          '--out-dir', str(out), '--arch', arch], capsys)
        assert code == 2
        assert err == (f'error: params file {params} holds an fcn8s, not an '
                       f'{arch}; pass --arch fcn8s\n')
    with pytest.raises(SystemExit) as e:
        run_cli(main, [img, '--params', params, '--arch', 'fcn4s'])
    assert e.value.code == 2 and "invalid choice: 'fcn4s'" in capsys.readouterr().err
    assert not out.exists()
