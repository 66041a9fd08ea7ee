"""Segment whole images of any size with a trained FCN, and colour the result.

Explained in chapters/fcn.md.
"""
import numpy as np
from mxnet import nd

from .segmaps import STRIDE, blend, ceil_to, colorize, full_palette, pad_to_stride
from .utils import to_numpy
from .voc import normalize_image

__all__ = ['predict_image', 'padded_scores', 'label2image', 'overlay']


def _device_of(net):
    """Return the first context the parameters of `net` live on."""
    return next(iter(net.collect_params().values())).list_ctx()[0]


def _pad(x, height, width):
    """Reflect-pad an (h, w, c) array at the bottom and right to (height, width)."""
    return np.pad(x, ((0, height - x.shape[0]), (0, width - x.shape[1]), (0, 0)),
                  mode='reflect')


def _scores(net, x, ctx):
    """Return the class scores (C, h, w) of a normalised (h, w, 3) array."""
    X = nd.array(x.transpose(2, 0, 1)[None], ctx=ctx)  # (1, 3, h, w)
    return net(X)[0]                                   # (C, h, w)


def padded_scores(net, x, ctx=None):
    """Return the class scores (C, H, W) of a normalised (H, W, 3) float32 array.

    The input is reflect-padded at the bottom and right to multiples of 32,
    scored once, and the scores are cropped back to the original pixels.
    Explained in chapters/fcn.md.
    """
    ctx = ctx or _device_of(net)
    height, width = x.shape[:2]
    return _scores(net, pad_to_stride(x), ctx)[:, :height, :width]  # (C, H, W)


def _tile_starts(size, tile, stride):
    """Return tile origins along one axis: every `stride`, the last flush with the end."""
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def predict_image(net, img, ctx=None, mode='pad', tile_size=(320, 480), overlap=0.5):
    """Return the (H, W) int32 class map of an (H, W, 3) RGB uint8 image.

    D2L's `predict`, for images of any size (the name `d2lfcn.predict` is the
    command `python -m d2lfcn.predict`).

    Parameters
    ----------
    net : Block
        A trained FCN; any block mapping (1, 3, h, w) to (1, C, h, w) for h, w
        multiples of 32. Called outside autograd.record, so BatchNorm uses its
        running statistics.
    img : NDArray or numpy.ndarray
        (H, W, 3) RGB uint8 image of any size. The result has the same type.
    ctx : Context, optional
        Where to run `net`; default: where its parameters live.
    mode : 'pad' or 'tile'
        'pad' reflect-pads the bottom and right up to multiples of 32, predicts
        once and crops back. 'tile' predicts overlapping `tile_size` windows
        and averages the scores where they overlap, as the FCN chapter
        describes; images smaller than a tile are reflect-padded first.
    tile_size : (int, int)
        Window height and width for mode='tile', multiples of 32 (default: the
        training crop).
    overlap : float
        Fraction of a window shared with its neighbour, in [0, 1).

    Explained in chapters/fcn.md.
    """
    as_nd = isinstance(img, nd.NDArray)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) RGB image, got shape {img.shape}')
    ctx = ctx or _device_of(net)
    height, width = img.shape[:2]
    x = normalize_image(img).asnumpy()  # (H, W, 3) float32
    if mode == 'pad':
        scores = padded_scores(net, x, ctx)  # (C, H, W)
    elif mode == 'tile':
        scores = _tiled_scores(net, x, ctx, tile_size, overlap)
    else:
        raise ValueError(f"mode must be 'pad' or 'tile', not {mode!r}")
    pred = scores.argmax(axis=0)[:height, :width].astype('int32')  # (H, W)
    return pred if as_nd else pred.asnumpy()


def _tiled_scores(net, x, ctx, tile_size, overlap):
    """Sum the scores of overlapping windows covering x (H, W, 3)."""
    if any(t <= 0 or t % STRIDE for t in tile_size) or not 0 <= overlap < 1:
        raise ValueError(f'tile_size must be positive multiples of {STRIDE} and '
                         f'overlap in [0, 1), got {tile_size}, {overlap}')
    height, width = x.shape[:2]
    # No window larger than the padded image: a small image is a single window.
    th = min(tile_size[0], ceil_to(height))
    tw = min(tile_size[1], ceil_to(width))
    x = _pad(x, max(height, th), max(width, tw))
    total = None
    for top in _tile_starts(x.shape[0], th, max(1, round(th * (1 - overlap)))):
        for left in _tile_starts(x.shape[1], tw, max(1, round(tw * (1 - overlap)))):
            s = _scores(net, x[top:top + th, left:left + tw], ctx)  # (C, th, tw)
            if total is None:
                total = nd.zeros((s.shape[0],) + x.shape[:2], ctx=ctx)  # (C, H', W')
            total[:, top:top + th, left:left + tw] += s
    # The chapter averages the windows' scores; dividing a pixel's scores by
    # its (positive) window count cannot change their argmax, so the sum will do.
    return total  # (C, H', W')


def label2image(pred, palette=None):
    """Colour an (H, W) class map, in VOC's palette by default: (H, W, 3) uint8.

    Explained in chapters/fcn.md.
    """
    # D2L indexes VOC_COLORMAP (the palette's first 21 entries) directly; we
    # use VOC's whole palette, so void (255) gets its colour too.
    if isinstance(pred, nd.NDArray):
        table = nd.array(full_palette(palette), ctx=pred.context, dtype='uint8')
        return nd.take(table, pred.astype('int32'), mode='clip')  # (H, W, 3)
    return colorize(pred, palette)  # (H, W, 3)


def overlay(img, pred, alpha=0.5, palette=None):
    """Blend the colours of `pred` into `img`, leaving background pixels as they are.

    Explained in chapters/fcn.md.
    """
    out = blend(to_numpy(img), to_numpy(pred), alpha, palette)  # (H, W, 3)
    return nd.array(out, dtype='uint8') if isinstance(img, nd.NDArray) else out
