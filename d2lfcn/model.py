"""Build the FCN: bilinear initialisation, the model block and its variants.

Explained in chapters/fcn.md and chapters/transposed-conv.md.
"""
import numpy as np
from mxnet import nd

__all__ = ['bilinear_kernel']


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
