"""Test d2lfcn.deploy: MXNet's files and the ONNX file compute what the network computes.

References: the Gluon network itself (MXNet), run against onnxruntime on the
exported file, and the onnx package's own checker and reader.
"""
import json
import os

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet import nd

from d2lfcn.deploy import ONNX_OPSET, export_fcn
from d2lfcn.model import get_fcn
from d2lfcn.runtime import OnnxFCN
from d2lfcn.segmaps import voc_palette
from d2lfcn.voc import VOC_CLASSES

SHAPES = [(320, 480), (224, 288), (384, 512)]  # (H, W), multiples of 32


def trained_like(arch, seed=0):
    """Return an FCN whose every parameter and BatchNorm statistic is random, not initial."""
    mx.random.seed(seed)
    net = get_fcn(21, pretrained_base=False, arch=arch)
    net(nd.zeros((1, 3, 64, 64)))  # every shape known
    rng = np.random.RandomState(seed)
    for name, p in net.collect_params().items():
        if name.endswith('running_mean') or name.endswith('beta') or name.endswith('bias'):
            value = rng.normal(0, 0.1, p.shape)
        elif name.endswith('running_var') or name.endswith('gamma'):
            # Also resnet v2's first BatchNorm, whose gamma MXNet ignores (fix_gamma).
            value = rng.uniform(0.5, 2.0, p.shape)
        else:
            value = p.data().asnumpy() * rng.uniform(0.8, 1.2, p.shape)
        p.set_data(nd.array(value.astype(np.float32)))
    return net


def export(net, folder, names=VOC_CLASSES):
    return export_fcn(net, str(folder), net.arch, 64, 96, True, list(names),
                      voc_palette()[:len(names)].tolist())


def assert_same_scores(net, fcn, seed=1):
    rng = np.random.RandomState(seed)
    for h, w in SHAPES:
        x = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
        ours = net(nd.array(x.transpose(2, 0, 1)[None]))[0].asnumpy()  # (C, H, W)
        theirs = fcn.scores(x)
        assert theirs.shape == ours.shape == (21, h, w)
        # float32 rounding grows with the scores: 1e-4 of their largest magnitude.
        assert np.abs(theirs - ours).max() <= 1e-4 * np.abs(ours).max(), (h, w)
        assert (theirs.argmax(0) == ours.argmax(0)).mean() > 0.9999


@pytest.mark.parametrize('arch', ['fcn32s', pytest.param('fcn16s', marks=pytest.mark.slow),
                                  pytest.param('fcn8s', marks=pytest.mark.slow)])
def test_onnx_runtime_computes_the_networks_scores(arch, tmp_path):
    net = trained_like(arch)
    params, symbol, onnx_file = export(net, tmp_path)
    assert [os.path.basename(f) for f in (params, symbol, onnx_file)] == [
        f'{arch}-0000.params', f'{arch}-symbol.json', f'{arch}.onnx']
    assert_same_scores(net, OnnxFCN(onnx_file))


def test_the_onnx_file_is_opset_13_with_dynamic_sizes_and_its_classes(tmp_path):
    names = ['sky'] + [f'thing {i}' for i in range(1, 21)]
    *_, onnx_file = export(trained_like('fcn32s'), tmp_path, names)
    model = onnx.load(onnx_file)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [('', ONNX_OPSET)]
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (model.graph.input[0], model.graph.output[0])]
    assert dims == [['N', 3, 'H', 'W'], ['N', 21, 'H', 'W']]
    assert [i.name for i in model.graph.input] == ['data']  # no weight among the inputs
    assert [o.name for o in model.graph.output] == ['scores']
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta['class_names']) == names
    fcn = OnnxFCN(onnx_file)
    assert fcn.class_names == names and fcn.arch == 'fcn32s'
    assert fcn.palette == voc_palette()[:21].tolist()


def test_a_failed_onnx_export_leaves_nothing(tmp_path, monkeypatch):
    from d2lfcn import deploy

    def fail(*args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(deploy, '_onnx_model', fail)
    out = tmp_path / 'new' / 'out'
    with pytest.raises(OSError):
        export(trained_like('fcn32s'), out)
    assert not (tmp_path / 'new').exists()
