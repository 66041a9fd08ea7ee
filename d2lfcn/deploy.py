"""Write a trained FCN for deployment: MXNet's symbol and params, and an ONNX file beside them.

The ONNX file runs without MXNet (`runtime`), on onnxruntime or any other
ONNX runtime: MXNet 1.9.1, its last release, is retired. It is MXNet's own
exporter's output, held at ONNX opset 13 (its translation of Split is
invalid from opset 18 on), with the fixes its output needs, and the class
names and colours as metadata. Explained in chapters/training-at-scale.md.
"""
import json
import os
import shutil
import tempfile

import numpy as np
from mxnet import nd

from .segmaps import RGB_MEAN, RGB_STD, STRIDE
from .utils import Arg, UserError, removed_on_error

__all__ = ['ONNX_OPSET', 'export_fcn']

ONNX_OPSET = 13
_INPUT, _OUTPUT = 'data', 'scores'


def _trace(net, height, width):
    """Hybridize `net` and run it once on a (1, 3, height, width) input: its graph exists."""
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    net.hybridize()
    net(nd.zeros((1, 3, height, width), ctx=ctx)).wait_to_read()


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("{onnx} needs the onnx package: pip install 'd2lfcn[onnx]'",
                        onnx=Arg('format', 'onnx')) from None


def _onnx_model(symbol_file, params_file, height, width, class_names, palette, arch):
    """Convert MXNet's files into a checked ONNX model (an onnx.ModelProto)."""
    import mxnet as mx
    import onnx
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    sym = mx.sym.load(symbol_file)
    params = {name.split(':', 1)[1]: value for name, value in nd.load(params_file).items()}
    _fix_gamma(sym, params)
    # export_model would take the installed onnx's newest opset; its converter
    # class takes ours (MXNet is retired: this private class will not change).
    graph = MXNetGraph().create_onnx_graph_proto(
        sym, params, in_shapes=[(1, 3, height, width)],
        in_types=[onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np.float32))],
        opset_version=ONNX_OPSET, dynamic=True, dynamic_input_shapes=[(None, 3, None, None)])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', ONNX_OPSET)])
    _tidy(model, len(class_names))
    onnx.helper.set_model_props(model, {
        'class_names': json.dumps(class_names), 'palette': json.dumps(palette),
        'arch': arch, 'stride': str(STRIDE),
        'normalize_mean': json.dumps(RGB_MEAN), 'normalize_std': json.dumps(RGB_STD)})
    onnx.checker.check_model(model, full_check=True)
    return model


def _fix_gamma(sym, params):
    """Set to 1 the gamma of every BatchNorm that ignores it (fix_gamma, as MXNet computes).

    Gluon's BatchNorm(scale=False), resnet v2's first layer, sets fix_gamma:
    MXNet multiplies by 1 whatever gamma holds, but the exporter writes the
    stored gamma into the ONNX graph.
    """
    nodes = json.loads(sym.tojson())['nodes']
    for node in nodes:
        if node['op'] == 'BatchNorm' and node.get('attrs', {}).get(
                'fix_gamma', 'True').lower() in ('true', '1'):
            gamma = nodes[node['inputs'][1][0]]['name']  # inputs: data, gamma, beta, ...
            if gamma in params:
                params[gamma] = nd.ones_like(params[gamma])


def _tidy(model, num_classes):
    """Keep the weights out of the inputs, name the output and the dynamic sizes."""
    graph = model.graph
    weights = {w.name for w in graph.initializer}
    # Listed as inputs too, weights could be replaced at run time, so
    # onnxruntime would fold no constant and warn once for each of them.
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.input[:]
    graph.input.extend(inputs)
    old = graph.output[0].name  # named after MXNet's last node, which varies
    for node in graph.node:
        node.output[:] = [_OUTPUT if o == old else o for o in node.output]
        node.input[:] = [_OUTPUT if i == old else i for i in node.input]
    graph.output[0].name = _OUTPUT
    for value, dims in ((graph.input[0], ('N', 3, 'H', 'W')),
                        (graph.output[0], ('N', num_classes, 'H', 'W'))):
        for dim, size in zip(value.type.tensor_type.shape.dim, dims):
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    # The installed onnx stamps its newest IR version (10), which onnxruntime
    # before 1.18 refuses; opset 13 needs IR 7.
    model.ir_version = min(model.ir_version, 8)


def export_fcn(net, out_dir, prefix, height=320, width=480, with_onnx=False,
               class_names=None, palette=None):
    """Write `net` as <prefix>-symbol.json and <prefix>-0000.params (and <prefix>.onnx).

    `net` is hybridized and traced on a (1, 3, height, width) input; the
    graphs accept any batch size, and any height and width that are
    multiples of 32. `with_onnx` writes <prefix>.onnx too, holding
    `class_names` and `palette` (lists) as metadata. The files are written
    into a temporary folder and moved into `out_dir` only when all are
    complete. Returns the paths written.
    Explained in chapters/training-at-scale.md.
    """
    if with_onnx:
        _require_onnx()
    _trace(net, height, width)
    params, symbol, onnx_file = (f'{prefix}-0000.params', f'{prefix}-symbol.json',
                                 f'{prefix}.onnx')
    names = [params, symbol] + ([onnx_file] if with_onnx else [])
    with removed_on_error(out_dir):
        tmp = tempfile.mkdtemp(prefix='.export-', dir=out_dir)
        try:
            net.export(os.path.join(tmp, prefix), epoch=0)
            if with_onnx:
                import onnx
                model = _onnx_model(os.path.join(tmp, symbol), os.path.join(tmp, params),
                                    height, width, list(class_names), palette, net.arch)
                onnx.save(model, os.path.join(tmp, onnx_file))
            for name in names:  # the weights first: a symbol file implies its weights
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(out_dir, name) for name in names]
