"""Test d2lfcn.runtime and `python -m d2lfcn.predict --onnx`: segmenting without MXNet.

References: the same weights run by MXNet (`predict_image`, and the
`--params` path of the command), and a Python in which `import mxnet` fails.
"""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from d2lfcn.inference import predict_image
from d2lfcn.runtime import OnnxFCN
from d2lfcn.segmaps import voc_palette

from test_deploy import export, trained_like

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    """(net, its weights file, its ONNX file) with random, non-initial parameters."""
    folder = tmp_path_factory.mktemp('model')
    net = trained_like('fcn32s', seed=3)
    net.save_parameters(str(folder / 'best.params'))
    return net, str(folder / 'best.params'), export(net, folder)[2]


def _photo(folder, h, w, seed=0):
    """A smooth random colour image (so classes form regions), as a JPEG."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (h // 20 + 2, w // 20 + 2, 3)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    path = str(folder / f'photo{h}x{w}.jpg')
    cv2.imwrite(path, img[:, :, ::-1])
    return path, cv2.imread(path)[:, :, ::-1]


def test_onnx_predicts_the_class_maps_mxnet_predicts(model, tmp_path):
    net, _, onnx_file = model
    fcn = OnnxFCN(onnx_file)
    for h, w in [(375, 500), (64, 96), (333, 257)]:  # VOC-sized, small, odd
        _, img = _photo(tmp_path, h, w)
        ours, theirs = fcn.predict(img), predict_image(net, img)
        assert ours.shape == (h, w) and ours.dtype == np.int32
        assert (ours == theirs).mean() >= 0.9999, (h, w)


def _blocked_mxnet(folder):
    """Return a PYTHONPATH entry where `import mxnet` fails as if it were not installed."""
    fake = folder / 'blocked' / 'mxnet'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text(
        "raise ModuleNotFoundError(\"No module named 'mxnet'\", name='mxnet')\n")
    return str(folder / 'blocked')


def _run(argv, tmp_path, pythonpath=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*pythonpath, str(ROOT)]))
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          cwd=str(tmp_path), env=env, timeout=300)


@pytest.mark.slow
def test_predict_onnx_runs_without_mxnet_and_writes_the_mxnet_masks(model, tmp_path):
    _, params, onnx_file = model
    photo, _ = _photo(tmp_path, 375, 500)
    blocked = _blocked_mxnet(tmp_path)
    onnx_run = _run(['-m', 'd2lfcn.predict', '--onnx', onnx_file, photo, '--out-dir', 'a'],
                    tmp_path, [blocked])
    assert onnx_run.returncode == 0, onnx_run.stderr
    mxnet_run = _run(['-m', 'd2lfcn.predict', '--params', params, photo, '--out-dir', 'b'],
                     tmp_path)
    assert mxnet_run.returncode == 0, mxnet_run.stderr
    for name in ('photo375x500_label.png', 'photo375x500_overlay.png'):
        a, b = cv2.imread(str(tmp_path / 'a' / name)), cv2.imread(str(tmp_path / 'b' / name))
        assert a.shape == b.shape and (a == b).all(axis=2).mean() >= 0.9999, name
    # And where MXNet is installed, the ONNX path still does not load it.
    code = ('import runpy, sys\n'
            f"sys.argv = ['predict', '--onnx', {onnx_file!r}, {photo!r}, '--out-dir', 'c']\n"
            "runpy.run_module('d2lfcn.predict', run_name='__main__')\n"
            "print('mxnet' in sys.modules, 'onnxruntime' in sys.modules)")
    loaded = _run(['-c', code], tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines()[-1] == 'False True'


@pytest.mark.slow
def test_a_command_that_needs_mxnet_says_so_in_one_line(tmp_path):
    proc = _run(['-m', 'd2lfcn.train', '--demo'], tmp_path, [_blocked_mxnet(tmp_path)])
    assert proc.returncode == 2
    assert proc.stderr == ("error: d2lfcn needs MXNet: pip install 'd2lfcn[cpu]' "
                           "(or 'd2lfcn[cu112]' on a CUDA 11.2 machine)\n")


def test_class_names_and_colours_come_from_the_file(model):
    fcn = OnnxFCN(model[2])
    assert fcn.class_names[:2] == ['background', 'aeroplane'] and len(fcn.class_names) == 21
    assert fcn.palette == voc_palette()[:21].tolist()
