"""Compute cross-correlation, convolution and transposed convolution from scratch.

Explained in chapters/conv-layer.md and chapters/transposed-conv.md.
"""
import numpy as np
from mxnet import init, nd
from mxnet.gluon import nn

from .model import bilinear_kernel

__all__ = ['corr2d', 'Conv2D', 'comp_conv2d', 'conv_output_shape', 'receptive_field',
           'conv_layers',
           'corr2d_multi_in', 'corr2d_multi_in_out', 'corr2d_multi_in_out_1x1',
           'dense_per_pixel', 'dense_to_conv1x1', 'class_softmax',
           'trans_conv', 'stretch_input', 'transposed_conv_output_shape', 'kernel2matrix',
           'bilinear_upsampler', 'upsample_bilinear']


def _pair(value):
    """Return `value` as an (h, w) tuple; an int stands for both axes."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


# ---------------------------------------------------------------- conv-layer


def corr2d(X, K):
    """Compute the 2D cross-correlation of X (h, w) with kernel K (kh, kw).

    Explained in chapters/conv-layer.md.
    """
    h, w = K.shape
    out_h, out_w = X.shape[0] - h + 1, X.shape[1] - w + 1
    # D2L loops over outputs and assigns Y[i, j] in place; summing kh * kw
    # shifted copies of X instead is the same sum, fast, and autograd can
    # differentiate it, so the from-scratch Conv2D below really learns.
    Y = 0
    for a in range(h):
        for b in range(w):
            Y = Y + K[a:a + 1, b:b + 1] * X[a:a + out_h, b:b + out_w]
    return Y                                 # (h - kh + 1, w - kw + 1)


class Conv2D(nn.Block):
    """Apply one learnable 2D kernel plus a scalar bias, built on `corr2d`.

    Explained in chapters/conv-layer.md.
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.weight = self.params.get('weight', shape=_pair(kernel_size))
        self.bias = self.params.get('bias', shape=(1,))

    def forward(self, x):
        return corr2d(x, self.weight.data()) + self.bias.data()


def comp_conv2d(conv2d, X):
    """Initialise `conv2d`, apply it to the 2D array X and return a 2D result.

    Explained in chapters/conv-layer.md.
    """
    conv2d.initialize()
    X = X.reshape((1, 1) + X.shape)          # (batch=1, channels=1, h, w)
    Y = conv2d(X)
    return Y.reshape(Y.shape[2:])            # drop batch and channel axes


def _per_axis(input_shape, *params):
    """Broadcast ints to the number of axes of `input_shape`."""
    axes = (input_shape,) if np.isscalar(input_shape) else tuple(input_shape)
    per_axis = [(p,) * len(axes) if np.isscalar(p) else tuple(p) for p in params]
    for p in per_axis:
        if len(p) != len(axes):
            raise ValueError(f'{p} does not match input shape {input_shape}')
    return axes, per_axis


def conv_output_shape(input_shape, kernel_size, strides=1, padding=0):
    """Return the output shape of a convolution: floor((n - k + 2p + s) / s).

    Per axis; `padding` (p) is per side, as in Gluon's `nn.Conv2D`. Ints or
    tuples are accepted; an int input gives an int.
    Explained in chapters/conv-layer.md.
    """
    axes, (ks, ss, ps) = _per_axis(input_shape, kernel_size, strides, padding)
    out = tuple((n - k + 2 * p + s) // s
                for n, k, s, p in zip(axes, ks, ss, ps))
    return out[0] if np.isscalar(input_shape) else out


def receptive_field(layers):
    """Return (size, jump, start) of an output element after each of `layers`.

    `layers` lists (kernel, stride, padding) along one axis, input first (see
    `conv_layers`). `size` is how many input pixels an element sees, `jump`
    how many input pixels lie between neighbouring elements (the output
    stride), `start` the input coordinate of element 0's centre (element j
    is centred on start + j * jump). Explained in chapters/conv-layer.md.
    """
    size, jump, start, out = 1, 1, 0.0, []
    for k, s, p in layers:
        size += (k - 1) * jump           # k - 1 more steps of the layer below
        start += ((k - 1) / 2 - p) * jump
        jump *= s
        out.append((size, jump, start))
    return out


def conv_layers(block):
    """Return (kernel, stride, padding) of every conv and pool layer in `block`.

    Blocks are walked in order; a residual block's shortcut (`downsample`)
    is skipped, since its 1x1 convolution sees less than the main path.
    Square kernels are assumed; a dilated kernel counts as its spread.
    Explained in chapters/conv-layer.md.
    """
    kwargs = getattr(block, '_kwargs', {})
    if 'kernel' in kwargs and not kwargs.get('global_pool', False):
        k, s = kwargs['kernel'][0], kwargs['stride'][0]
        d = kwargs.get('dilate', (1,))[0]
        return [(d * (k - 1) + 1, s, kwargs['pad'][0])]
    return [layer for name, child in block._children.items()
            if name != 'downsample' for layer in conv_layers(child)]


def corr2d_multi_in(X, K):
    """Cross-correlate X (c_i, h, w) with K (c_i, kh, kw) and sum over channels.

    Explained in chapters/conv-layer.md.
    """
    return sum(corr2d(X[c], K[c]) for c in range(X.shape[0]))


def corr2d_multi_in_out(X, K):
    """Cross-correlate X (c_i, h, w) with each of the c_o kernels in K (c_o, c_i, kh, kw).

    Explained in chapters/conv-layer.md.
    """
    return nd.stack(*[corr2d_multi_in(X, k) for k in K], axis=0)  # (c_o, h', w')


def corr2d_multi_in_out_1x1(X, K):
    """Compute a 1x1 convolution of X (c_i, h, w) with K (c_o, c_i, 1, 1) as a matrix product.

    Explained in chapters/conv-layer.md.
    """
    c_i, h, w = X.shape
    c_o = K.shape[0]
    X = X.reshape((c_i, h * w))              # one column per pixel
    K = K.reshape((c_o, c_i))
    Y = nd.dot(K, X)                         # (c_o, h * w)
    return Y.reshape((c_o, h, w))


def dense_per_pixel(dense, X):
    """Apply a Dense layer to the channel vector of every pixel of X (N, C, H, W).

    Explained in chapters/conv-layer.md.
    """
    X = X.transpose((0, 2, 3, 1))            # (N, H, W, C): channels last
    Y = dense(X.reshape((-1, X.shape[-1])))  # (N * H * W, units)
    Y = Y.reshape(X.shape[:3] + (-1,))       # (N, H, W, units)
    return Y.transpose((0, 3, 1, 2))         # (N, units, H, W)


def dense_to_conv1x1(dense, ctx=None):
    """Return a 1x1 `nn.Conv2D` that computes the trained `dense` at every pixel.

    Parameters
    ----------
    dense : mxnet.gluon.nn.Dense
        An initialised Dense layer with weight (units, in_units); its bias and
        activation, if any, carry over.
    ctx : mxnet.Context, optional
        Where the new layer's parameters live (default: the Dense layer's).

    Returns
    -------
    mxnet.gluon.nn.Conv2D
        Maps (N, in_units, H, W) to (N, units, H, W). Explained in
        chapters/conv-layer.md.
    """
    units, in_units = dense.weight.shape
    if in_units == 0:
        raise ValueError('dense_to_conv1x1 needs a Dense layer with known '
                         'in_units; pass in_units= or run it on one batch first')
    weight = dense.weight.data()             # (units, in_units)
    ctx = ctx or weight.context
    use_bias = dense.bias is not None
    # Dense(activation='relu') keeps the name only on its Activation child.
    act = dense.act._act_type if dense.act is not None else None
    conv = nn.Conv2D(units, kernel_size=1, in_channels=in_units,
                     use_bias=use_bias, activation=act)
    conv.initialize(ctx=ctx)
    # A 1x1 kernel holds one weight per (output, input) channel pair: the
    # Dense matrix itself, reshaped.
    conv.weight.set_data(weight.reshape((units, in_units, 1, 1)))
    if use_bias:
        conv.bias.set_data(dense.bias.data())
    return conv


def class_softmax(scores):
    """Turn (N, C, H, W) class scores into per-pixel probabilities over C.

    Explained in chapters/conv-layer.md.
    """
    return nd.softmax(scores, axis=1)        # (N, C, H, W), sums to 1 over C


# ----------------------------------------------------------- transposed-conv


def trans_conv(X, K, strides=1, padding=0, output_padding=0):
    """Compute the 2D transposed convolution of X (h, w) with kernel K (kh, kw).

    D2L's trans_conv(X, K) plus Gluon-style `strides`, per-side `padding` and
    `output_padding` (rows and columns kept at the bottom and right).
    Explained in chapters/transposed-conv.md.
    """
    h, w = K.shape
    sh, sw = _pair(strides)
    ph, pw = _pair(padding)
    oh, ow = _pair(output_padding)
    full_h, full_w = (X.shape[0] - 1) * sh + h, (X.shape[1] - 1) * sw + w
    Y = nd.zeros((full_h + oh, full_w + ow), ctx=X.context)
    # Each input element scatters a scaled copy of K, `strides` apart.
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            Y[i * sh:i * sh + h, j * sw:j * sw + w] += X[i, j] * K
    # Padding in a transposed convolution removes rows/columns at the border;
    # output_padding gives some back at the bottom and right.
    return Y[ph:full_h - ph + oh, pw:full_w - pw + ow]


def stretch_input(X, kernel_size, strides=1, padding=0, output_padding=0):
    """Insert strides - 1 zeros between X's elements and pad k - 1 - padding zeros around.

    corr2d of the result with the flipped kernel is trans_conv(X, K, strides,
    padding, output_padding): a fractionally-strided convolution. The extra
    `output_padding` zeros go at the bottom and right, as in Gluon.
    Explained in chapters/transposed-conv.md.
    """
    (kh, kw), (sh, sw) = _pair(kernel_size), _pair(strides)
    (ph, pw), (oh, ow) = _pair(padding), _pair(output_padding)
    h, w = (X.shape[0] - 1) * sh + 1, (X.shape[1] - 1) * sw + 1
    # Pad k - 1 on every side first, then cut `padding`: this also works
    # when padding > k - 1, where the cut reaches into X itself.
    Z = nd.zeros((h + 2 * (kh - 1) + oh, w + 2 * (kw - 1) + ow), ctx=X.context)
    Z[kh - 1:kh - 1 + h:sh, kw - 1:kw - 1 + w:sw] = X
    return Z[ph:Z.shape[0] - ph, pw:Z.shape[1] - pw]


def transposed_conv_output_shape(input_shape, kernel_size, strides=1,
                                 padding=0, output_padding=0):
    """Return a transposed convolution's output shape, per axis (n - 1) s - 2 p + k + o.

    `padding` is per side and `output_padding` (o) is added on one side, as
    in Gluon's `nn.Conv2DTranspose`. Explained in chapters/transposed-conv.md.
    """
    axes, (ks, ss, ps, os_) = _per_axis(input_shape, kernel_size, strides,
                                        padding, output_padding)
    out = tuple((n - 1) * s - 2 * p + k + o
                for n, k, s, p, o in zip(axes, ks, ss, ps, os_))
    return out[0] if np.isscalar(input_shape) else out


def kernel2matrix(K, input_shape=(3, 3), strides=1):
    """Return the sparse matrix W with corr2d(X, K) == W @ X.reshape(-1).

    W has one row per output element and one column per input element:
    (out_h * out_w, in_h * in_w). D2L hard-codes a 2x2 kernel on a 3x3 input;
    this version takes any kernel, input shape and stride.
    Explained in chapters/transposed-conv.md.
    """
    K = K.asnumpy() if isinstance(K, nd.NDArray) else np.asarray(K)
    kh, kw = K.shape
    in_h, in_w = _pair(input_shape)
    sh, sw = _pair(strides)
    out_h, out_w = conv_output_shape((in_h, in_w), (kh, kw), (sh, sw))
    W = np.zeros((out_h * out_w, in_h * in_w), dtype=np.float32)
    for i in range(out_h):
        for j in range(out_w):
            # Row (i, j) holds K at the window whose top-left is (i*sh, j*sw).
            for a in range(kh):
                start = (i * sh + a) * in_w + j * sw
                W[i * out_w + j, start:start + kw] = K[a]
    return nd.array(W)                       # (out_h * out_w, in_h * in_w)


def bilinear_upsampler(channels, scale=2):
    """Return a Conv2DTranspose that upsamples each channel `scale` times bilinearly.

    Explained in chapters/transposed-conv.md.
    """
    # The usual FCN recipe: kernel 2s - s % 2 and padding ceil((s - 1) / 2),
    # which is s // 2, give exactly s * n outputs for n inputs.
    kernel = 2 * scale - scale % 2
    padding = scale // 2
    layer = nn.Conv2DTranspose(channels, kernel_size=kernel, strides=scale,
                               padding=padding, in_channels=channels,
                               use_bias=False)
    layer.initialize(init.Constant(bilinear_kernel(channels, channels, kernel)))
    return layer


def upsample_bilinear(img, scale=2):
    """Upsample an (H, W, C) image to (scale * H, scale * W, C) with a transposed conv.

    The result is float32 in the input's value range (0..255 stays 0..255).
    Explained in chapters/transposed-conv.md.
    """
    if not isinstance(img, nd.NDArray):
        img = nd.array(np.asarray(img))
    X = img.astype('float32').transpose((2, 0, 1)).expand_dims(0)  # (1, C, H, W)
    Y = bilinear_upsampler(X.shape[1], scale)(X)  # (1, C, sH, sW)
    return Y[0].transpose((1, 2, 0))         # (sH, sW, C)
