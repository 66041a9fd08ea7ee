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

from .segmaps import FCN_ARCHS, STRIDE
from .utils import Arg, UserError, check_mxnet_path, first_line

__all__ = ['bilinear_kernel', 'BlockConv2DTranspose', 'FCN', 'SkipFCN', 'FCN_ARCHS',
           'STRIDE', 'get_fcn', 'backbone_file', 'backbone_sha1', 'backbone_url',
           'load_fcn']

BACKBONE = 'resnet18_v2'
_FINEST_STRIDE = {'fcn32s': 32, 'fcn16s': 16, 'fcn8s': 8}  # finest scores fused


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


class BlockConv2DTranspose(nn.Conv2DTranspose):
    """A Conv2DTranspose that computes kernel 2s, stride s, padding s/2 as one matrix product.

    Same parameters, outputs and gradients as nn.Conv2DTranspose, up to
    float rounding; other shapes run nn.Conv2DTranspose's own code. It is
    there for speed: on a CPU, MXNet's own deconvolution is slow for this
    shape, and FCN and SkipFCN upsample with this class instead
    (the 'stock' loop of benchmarks/bench_train.py measures the difference).
    chapters/fcn.md shows that the FCN built with it equals D2L's.
    """

    def hybrid_forward(self, F, x, weight, bias=None):
        kw = self._kwargs
        s = kw['stride'][0]
        if not (kw['kernel'] == (2 * s, 2 * s) and kw['stride'] == (s, s)
                and kw['pad'] == (s // 2, s // 2) and s % 2 == 0
                and kw['dilate'] == (1, 1) and kw['adj'] == (0, 0)
                and kw['num_group'] == 1 and kw['layout'] == 'NCHW'
                and self._in_channels):
            return super().hybrid_forward(F, x, weight, bias)
        # With stride s and kernel 2s, the output splits into s x s blocks
        # (offset by the padding s/2) that each see a 2 x 2 neighbourhood of
        # input pixels: input (i - a, j - b) weighs in through the kernel's
        # quarter (a, b). MXNet's oneDNN deconvolution is slow for this shape
        # (with it, an FCN training step took 1.04-1.19 times as long: the
        # 'stock' loop of benchmarks/bench_train.py); a matrix product over the
        # neighbourhoods, then moving the blocks in place, is faster. Both add
        # the same 4 x in_channels products per output.
        c_in, c_out, p = self._in_channels, self._channels, s // 2
        w = F.reshape(weight, shape=(c_in, c_out, 2, s, 2, s))     # (c, o, a, r, b, t)
        w = F.transpose(w, axes=(1, 3, 5, 2, 4, 0))                 # (o, r, t, a, b, c)
        w = F.reshape(w, shape=(c_out * s * s, 4 * c_in))
        x = F.pad(x, mode='constant', pad_width=(0, 0, 0, 0, 1, 1, 1, 1))
        x = F.transpose(x, axes=(0, 2, 3, 1))                       # (n, h+2, w+2, c)
        x = F.concat(*[F.slice(x, begin=(None, 1 - a, 1 - b, None),   # x[i - a, j - b]
                               end=(None, -a or None, -b or None, None))
                       for a in (0, 1) for b in (0, 1)], dim=3)     # (n, h+1, w+1, 4c)
        if bias is not None:
            bias = F.repeat(bias, repeats=s * s)                    # (o, r, t)
        y = F.FullyConnected(x, w, bias, num_hidden=c_out * s * s,
                             no_bias=bias is None, flatten=False)   # (n, h+1, w+1, o*s*s)
        y = F.reshape(y, shape=(0, 0, 0, c_out, s, s))             # (n, i, j, o, r, t)
        y = F.transpose(y, axes=(0, 3, 1, 4, 2, 5))                 # (n, o, i, r, j, t)
        y = F.reshape(y, shape=(0, 0, -3, -3))                      # (n, o, s(h+1), s(w+1))
        return F.slice(y, begin=(None, None, p, p), end=(None, None, -p, -p))


class FCN(nn.HybridBlock):
    """Segment images: CNN features, a 1x1 class scorer, a 32x transposed conv.

    Explained in chapters/fcn.md.
    """

    arch = 'fcn32s'

    def __init__(self, features, num_classes, **kwargs):
        super().__init__(**kwargs)
        # `features` stays a plain HybridSequential of the backbone's layers, so
        # stage outputs remain addressable for skip variants: in resnet18_v2,
        # features[:7] ends at stride 8 (stage2), features[:8] at stride 16.
        self.features = features
        with self.name_scope():
            self.score = nn.Conv2D(num_classes, kernel_size=1)
            # in_channels given: the bilinear weights exist (and can be shown)
            # before the first forward pass. The same parameters and outputs
            # as nn.Conv2DTranspose (see BlockConv2DTranspose).
            self.upsample = BlockConv2DTranspose(
                num_classes, kernel_size=64, padding=16, strides=32,
                in_channels=num_classes)

    def hybrid_forward(self, F, x):
        x = self.features(x)       # (batch, 512, H/32, W/32)
        x = self.score(x)          # (batch, num_classes, H/32, W/32)
        return self.upsample(x)    # (batch, num_classes, H, W)


class SkipFCN(nn.HybridBlock):
    """Segment images fusing stride-16 (FCN-16s) and stride-8 (FCN-8s) scores.

    Explained in chapters/fcn.md.
    """

    # Layers of resnet18_v2's `features` up to the end of stage2 (stride 8,
    # 128 channels) and of stage3 (stride 16, 256 channels).
    _STRIDE8_END, _STRIDE16_END = 7, 8

    def __init__(self, features, num_classes, finest_stride=8, **kwargs):
        super().__init__(**kwargs)
        if finest_stride not in (16, 8):
            raise ValueError(f'finest_stride must be 16 or 8, not {finest_stride!r}')
        self.finest_stride = finest_stride
        self.arch = f'fcn{finest_stride}s'
        self.features = features  # the same layers, and names, as in FCN
        c = num_classes
        with self.name_scope():
            self.score = nn.Conv2D(c, kernel_size=1)  # on stride 32, as in FCN
            # resnet v2 is pre-activation: a stage's output is a residual sum
            # that the next stage's first block batch-normalises and ReLUs for
            # itself. The paper scores pool3 and pool4 as they are, so we score
            # these sums directly, with no BatchNorm or ReLU of our own.
            # Zero-initialised, the skip scores leave the untrained net
            # computing fcn32s's coarse scores, upsampled in 2x steps.
            self.score16 = nn.Conv2D(c, kernel_size=1, in_channels=256)
            # 2x upsampling: kernel 4, stride 2, padding 1 gives exactly 2n from
            # n. No bias: the score layer's bias is added right after it.
            self.up32to16 = nn.Conv2DTranspose(c, kernel_size=4, strides=2, padding=1,
                                               in_channels=c, use_bias=False)
            if finest_stride == 8:
                self.score8 = nn.Conv2D(c, kernel_size=1, in_channels=128)
                self.up16to8 = nn.Conv2DTranspose(c, kernel_size=4, strides=2, padding=1,
                                                  in_channels=c, use_bias=False)
            s = finest_stride  # kernel 2s, padding s/2: exactly s * n from n
            self.upsample = BlockConv2DTranspose(c, kernel_size=2 * s, strides=s,
                                                 padding=s // 2, in_channels=c)

    def hybrid_forward(self, F, x):
        for i in range(len(self.features)):
            x = self.features[i](x)
            if i + 1 == self._STRIDE8_END:
                x8 = x                                  # (batch, 128, H/8, W/8)
            elif i + 1 == self._STRIDE16_END:
                x16 = x                                 # (batch, 256, H/16, W/16)
        s = self.score(x)                               # (batch, C, H/32, W/32)
        s = self.up32to16(s) + self.score16(x16)        # (batch, C, H/16, W/16)
        if self.finest_stride == 8:
            s = self.up16to8(s) + self.score8(x8)       # (batch, C, H/8, W/8)
        return self.upsample(s)                         # (batch, C, H, W)


def backbone_file(root=None):
    """Return the path where the Gluon model zoo keeps the backbone's weights.

    Explained in chapters/fcn.md.
    """
    if root is None:
        # Read MXNET_HOME now, not at import time as the model zoo's defaults do.
        root = os.path.join(mx.base.data_dir(), 'models')
    name = f'{BACKBONE}-{model_store.short_hash(BACKBONE)}.params'
    return os.path.join(os.path.expanduser(root), name)


def backbone_sha1():
    """Return the sha1 the Gluon model zoo expects of the backbone's weights file."""
    # MXNet keeps its checksums in a private table; this is the one place we read it.
    return model_store._model_sha1[BACKBONE]


def backbone_url():
    """Return the URL the Gluon model zoo downloads the backbone's weights from (a zip)."""
    repo = os.environ.get('MXNET_GLUON_REPO', model_store.apache_repo_url).rstrip('/') + '/'
    name = os.path.basename(backbone_file())[:-len('.params')]
    return model_store._url_format.format(repo_url=repo, file_name=name)


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
        reason = first_line(e)
        raise UserError(
            f'cannot download the pretrained {BACKBONE} weights ({reason}); '
            f'put the file at {path}, or pass {{params}}, or {{scratch}}',
            params=Arg('backbone_params', 'PATH'),
            scratch=Arg('pretrained_base', False, flag='--no-pretrained-base')) from None


def _load_backbone(path, ctx):
    """Return a resnet18_v2 holding a .params file's weights, or raise UserError.

    The file may come from any resnet18_v2 classifier (ImageNet's 1000
    classes, or another number such as the book's stand-in): only its
    features are used, so its class count is read off its output layer.
    """
    check_mxnet_path(path, 'backbone_params')
    if not os.path.isfile(path):
        raise UserError(f'backbone params file {path} does not exist; pass a '
                        f'{BACKBONE} .params file saved by the Gluon model zoo')
    try:
        saved = nd.load(path)
        output = saved.get('output.weight') if isinstance(saved, dict) else None
        net = vision.resnet18_v2(classes=output.shape[0] if output is not None else 1000)
        net.load_parameters(path, ctx=ctx)
    except (mx.base.MXNetError, AssertionError, ValueError, KeyError) as e:
        raise UserError(f'backbone params file {path} is not a valid '
                        f'{BACKBONE} .params file: {first_line(e)}') from None
    return net


def get_fcn(num_classes=21, pretrained_base=True, ctx=None, backbone_params=None,
            arch='fcn32s'):
    """Return D2L's FCN on resnet18_v2, or a skip variant, ready to train.

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
        A resnet18_v2 .params file to load instead of the model-zoo cache,
        from a classifier of any number of classes (only its features are
        used); overrides `pretrained_base`.
    arch : 'fcn32s', 'fcn16s' or 'fcn8s'
        'fcn32s' is D2L's model (an `FCN`): scores at stride 32 upsampled 32x.
        'fcn16s' and 'fcn8s' (a `SkipFCN`) add the scores of the stride-16 and
        stride-8 features, as in the FCN paper (Long et al., 2015).

    Explained in chapters/fcn.md.
    """
    if arch not in FCN_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(FCN_ARCHS)}, not {arch!r}")
    ctx = ctx or mx.cpu()
    if backbone_params is not None:
        base = _load_backbone(os.fspath(backbone_params), ctx)
    elif pretrained_base:
        base = _load_backbone(_pretrained_file(), ctx)
    else:
        base = vision.resnet18_v2()
        base.initialize(init.Xavier(), ctx=ctx)
    features = nn.HybridSequential(prefix='')
    # Drop the global average pooling and the flatten, as D2L does.
    features.add(*base.features[:-2])
    if arch == 'fcn32s':
        net = FCN(features, num_classes)
    else:
        net = SkipFCN(features, num_classes, _FINEST_STRIDE[arch])
    net.score.initialize(init.Xavier(), ctx=ctx)
    # Per-block initialisation: a Constant with a large array as the layer's
    # own weight_initializer would be serialised into every hybridized graph.
    k = net.upsample.weight.shape[-1]  # 64, 32 or 16: twice the stride
    net.upsample.initialize(
        init.Constant(bilinear_kernel(num_classes, num_classes, k)), ctx=ctx)
    if arch != 'fcn32s':
        _init_skips(net, num_classes, ctx)
    return net


def _init_skips(net, num_classes, ctx):
    """Zero the skip scores and make the 2x upsamplings bilinear, as the paper does."""
    kernel = init.Constant(bilinear_kernel(num_classes, num_classes, 4))
    net.score16.initialize(init.Zero(), ctx=ctx)
    net.up32to16.initialize(kernel, ctx=ctx)
    if net.finest_stride == 8:
        net.score8.initialize(init.Zero(), ctx=ctx)
        net.up16to8.initialize(kernel, ctx=ctx)


def _arch_of(saved):
    """Return the arch whose layers a loaded .params dict holds."""
    if 'score8.weight' in saved:
        return 'fcn8s'
    return 'fcn16s' if 'score16.weight' in saved else 'fcn32s'


def load_fcn(params, arch=None, num_classes=None, ctx=None):
    """Return the FCN whose weights `params` holds, ready to predict.

    Parameters
    ----------
    params : str
        A .params file saved by `net.save_parameters` (e.g. best.params of
        `python -m d2lfcn.train`).
    arch : 'fcn32s', 'fcn16s' or 'fcn8s', optional
        Default: the arch whose layers the file holds.
    num_classes : int, optional
        Default: the number of score maps the file's class scorer has.
    ctx : Context or list of Context, optional
        Where the parameters go; default cpu().

    A missing or corrupt file, or one holding another arch or class count
    than asked for, raises UserError naming the file and the argument to pass.
    Explained in chapters/fcn.md.
    """
    params = os.fspath(params)
    check_mxnet_path(params, 'params')
    if not os.path.isfile(params):
        what = 'is a folder' if os.path.isdir(params) else 'does not exist'
        raise UserError(f'params file {params} {what}; pass {{arg}} with the .params '
                        'file written by python -m d2lfcn.train', arg=Arg('params'))
    try:
        saved = nd.load(params)
    except mx.base.MXNetError as e:
        raise UserError(f'params file {params} is corrupt or not an MXNet '
                        f'.params file ({first_line(e)})') from None
    score = saved.get('score.weight') if isinstance(saved, dict) else None
    if score is None:
        raise UserError(f'params file {params} does not hold an FCN (no score.weight)')
    if arch is not None and _arch_of(saved) != arch:
        raise UserError(f'params file {params} holds an {_arch_of(saved)}, not an '
                        f'{arch}; pass {{arch}}', arch=Arg('arch', _arch_of(saved)))
    if num_classes is not None and score.shape[0] != num_classes:
        raise UserError(f'params file {params} is for {score.shape[0]} classes, not '
                        f'{num_classes}; pass {{arg}}',
                        arg=Arg('num_classes', score.shape[0]))
    arch, num_classes = _arch_of(saved), score.shape[0]
    net = get_fcn(num_classes, pretrained_base=False, ctx=ctx, arch=arch)
    try:
        net.load_parameters(params, ctx=ctx)
    except (mx.base.MXNetError, AssertionError, ValueError, KeyError) as e:
        raise UserError(f'params file {params} does not fit the {arch}: '
                        f'{first_line(e)}') from None
    return net

