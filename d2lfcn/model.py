"""Build the FCN: bilinear initialisation, the model block and its variants.

Explained in chapters/fcn.md and chapters/transposed-conv.md.
"""
import contextlib
import io
import os

import mxnet as mx
import numpy as np
from mxnet import init, nd
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import model_store, vision

from .utils import UserError

__all__ = ['bilinear_kernel', 'FCN', 'get_fcn', 'backbone_file']

BACKBONE = 'resnet18_v2'


def bilinear_kernel(in_channels, out_channels, kernel_size):
    """Return an (in, out, k, k) kernel that upsamples by bilinear interpolation.

    Explained in chapters/transposed-conv.md.
    """
    factor = (kernel_size + 1) // 2
    if kernel_size % 2 == 1:
        center = factor - 1
    else:
        center = factor - 0.5
    og = (np.arange(kernel_size).reshape(-1, 1),
          np.arange(kernel_size).reshape(1, -1))
    filt = (1 - np.abs(og[0] - center) / factor) * \
           (1 - np.abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size))
    # Channel c feeds only output channel c: each map is upsampled on its own.
    weight[range(in_channels), range(out_channels), :, :] = filt
    return nd.array(weight)


class FCN(nn.HybridBlock):
    """Segment images: CNN features, a 1x1 class scorer, a 32x transposed conv.

    Explained in chapters/fcn.md.
    """

    def __init__(self, features, num_classes, **kwargs):
        super().__init__(**kwargs)
        # `features` stays a plain HybridSequential of the backbone's layers, so
        # stage outputs remain addressable for skip variants: in resnet18_v2,
        # features[:7] ends at stride 8 (stage2), features[:8] at stride 16.
        self.features = features
        with self.name_scope():
            self.score = nn.Conv2D(num_classes, kernel_size=1)
            # in_channels given: the bilinear weights exist (and can be shown)
            # before the first forward pass.
            self.upsample = nn.Conv2DTranspose(
                num_classes, kernel_size=64, padding=16, strides=32,
                in_channels=num_classes)

    def hybrid_forward(self, F, x):
        x = self.features(x)       # (batch, 512, H/32, W/32)
        x = self.score(x)          # (batch, num_classes, H/32, W/32)
        return self.upsample(x)    # (batch, num_classes, H, W)


def backbone_file(root=None):
    """Return the path where the Gluon model zoo keeps the backbone's weights.

    Explained in chapters/fcn.md.
    """
    if root is None:
        # Read MXNET_HOME now, not at import time as the model zoo's defaults do.
        root = os.path.join(mx.base.data_dir(), 'models')
    name = f'{BACKBONE}-{model_store.short_hash(BACKBONE)}.params'
    return os.path.join(os.path.expanduser(root), name)


def _pretrained_file():
    """Return the cached model-zoo weights, downloading them if absent."""
    path = backbone_file()
    root = os.path.dirname(path)
    if not os.path.exists(path):
        print(f'downloading {BACKBONE} weights to {path}')
    try:
        # The model zoo prints every retry; keep the user's screen to one line.
        with contextlib.redirect_stdout(io.StringIO()):
            return model_store.get_model_file(BACKBONE, root=root)
    except Exception as e:  # network, HTTP, zip and hash errors all end here
        reason = type(e).__name__
        raise UserError(
            f'cannot download the pretrained {BACKBONE} weights ({reason}); '
            f'put the file at {path}, or pass '
            f'--backbone-params PATH, or --no-pretrained-base') from None


def _load_backbone(net, path, ctx):
    """Load a full resnet18_v2 .params file into `net`, or raise UserError."""
    if not os.path.isfile(path):
        raise UserError(f'backbone params file {path} does not exist; pass a '
                        f'{BACKBONE} .params file saved by the Gluon model zoo')
    try:
        net.load_parameters(path, ctx=ctx)
    except (mx.base.MXNetError, AssertionError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'backbone params file {path} is not a valid '
                        f'{BACKBONE} .params file: {first[:200]}') from None


def get_fcn(num_classes=21, pretrained_base=True, ctx=None, backbone_params=None):
    """Return D2L's FCN on resnet18_v2, initialised and ready to train.

    Parameters
    ----------
    num_classes : int
        Output channels, one score map per class (21 for VOC).
    pretrained_base : bool
        Load ImageNet weights for the backbone from the Gluon model zoo cache
        ($MXNET_HOME/models, default ~/.mxnet/models), downloading them if
        needed. False initialises the backbone randomly (Xavier).
    ctx : Context or list of Context, optional
        Where the parameters live; default cpu().
    backbone_params : str, optional
        A resnet18_v2 .params file to load instead of the model-zoo cache;
        overrides `pretrained_base`.

    Explained in chapters/fcn.md.
    """
    ctx = ctx or mx.cpu()
    base = vision.resnet18_v2()
    if backbone_params is not None:
        _load_backbone(base, os.fspath(backbone_params), ctx)
    elif pretrained_base:
        _load_backbone(base, _pretrained_file(), ctx)
    else:
        base.initialize(init.Xavier(), ctx=ctx)
    features = nn.HybridSequential(prefix='')
    # Drop the global average pooling and the flatten, as D2L does.
    features.add(*base.features[:-2])
    net = FCN(features, num_classes)
    net.score.initialize(init.Xavier(), ctx=ctx)
    # Per-block initialisation: a Constant with a large array as the layer's
    # own weight_initializer would be serialised into every hybridized graph.
    net.upsample.initialize(
        init.Constant(bilinear_kernel(num_classes, num_classes, 64)), ctx=ctx)
    return net
