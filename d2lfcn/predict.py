"""Segment whole images of any size, colour the result, `python -m d2lfcn.predict`.

Explained in chapters/fcn.md.
"""
import os

import mxnet as mx
import numpy as np
from mxnet import nd

from .image import read_image, write_png
from .model import FCN_ARCHS, load_fcn
from .utils import ArgumentParser, UserError, run_cli, try_all_gpus
from .voc import IGNORE_LABEL, VOC_COLORMAP, VOC_VOID_COLOR, normalize_image

__all__ = ['predict', 'label2image', 'overlay']

STRIDE = 32  # the FCN's total downsampling: inputs must be multiples of it


def _ceil_to(n, multiple):
    return -(-n // multiple) * multiple


def _device_of(net):
    """Return the first context the parameters of `net` live on."""
    return next(iter(net.collect_params().values())).list_ctx()[0]


def _pad(x, height, width):
    """Reflect-pad an (h, w, c) array at the bottom and right to (height, width)."""
    # Reflection continues the image's own statistics; zero padding would
    # paste an artificial grey (the mean colour) block next to the border.
    return np.pad(x, ((0, height - x.shape[0]), (0, width - x.shape[1]), (0, 0)),
                  mode='reflect')


def _scores(net, x, ctx):
    """Return the class scores (C, h, w) of a normalised (h, w, 3) array."""
    X = nd.array(x.transpose(2, 0, 1)[None], ctx=ctx)  # (1, 3, h, w)
    return net(X)[0]                                   # (C, h, w)


def _tile_starts(size, tile, stride):
    """Return tile origins along one axis: every `stride`, the last flush with the end."""
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def predict(net, img, ctx=None, mode='pad', tile_size=(320, 480), overlap=0.5):
    """Return the (H, W) int32 class map of an (H, W, 3) RGB uint8 image.

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
        x = _pad(x, _ceil_to(height, STRIDE), _ceil_to(width, STRIDE))
        scores = _scores(net, x, ctx)  # (C, H', W')
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
    th = min(tile_size[0], _ceil_to(height, STRIDE))
    tw = min(tile_size[1], _ceil_to(width, STRIDE))
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


def _palette():
    """Return a 256-entry colour table: VOC_COLORMAP, and void's colour at 255."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:len(VOC_COLORMAP)] = VOC_COLORMAP
    table[IGNORE_LABEL] = VOC_VOID_COLOR
    return table


def label2image(pred):
    """Colour an (H, W) class map with VOC_COLORMAP into an (H, W, 3) uint8 image.

    Explained in chapters/fcn.md.
    """
    # D2L indexes VOC_COLORMAP directly; we also colour void (255) like VOC does.
    if isinstance(pred, nd.NDArray):
        table = nd.array(_palette(), ctx=pred.context, dtype='uint8')
        return nd.take(table, pred.astype('int32'), mode='clip')  # (H, W, 3)
    pred = np.asarray(pred).astype(np.int64)
    if pred.size and (pred.min() < 0 or pred.max() > 255):
        raise ValueError('class ids must lie in 0..255')
    return _palette()[pred]  # (H, W, 3)


def overlay(img, pred, alpha=0.5):
    """Blend the colours of `pred` into `img`, leaving background pixels as they are.

    Explained in chapters/fcn.md.
    """
    as_nd = isinstance(img, nd.NDArray)
    img = img.asnumpy() if as_nd else np.asarray(img)
    pred = pred.asnumpy() if isinstance(pred, nd.NDArray) else np.asarray(pred)
    colour = label2image(pred).astype(np.float32)
    # Background's colour is black: blending it would only darken the photo.
    blend = np.where((pred != 0)[..., None],
                     (1 - alpha) * img + alpha * colour, img)
    out = np.clip(np.round(blend), 0, 255).astype(np.uint8)  # (H, W, 3)
    return nd.array(out, dtype='uint8') if as_nd else out


# ------------------------------------------------------------------ the CLI

def _read_rgb(path):
    """Return an image file as (H, W, 3) RGB uint8, or raise UserError."""
    if not os.path.isfile(path):
        what = 'is not a file' if os.path.exists(path) else 'does not exist'
        raise UserError(f'image {path} {what}')
    return read_image(path, exif_orientation=True)  # upright, as viewers show it


def _parse(argv):
    p = ArgumentParser(
        prog='python -m d2lfcn.predict',
        description='Segment images with a trained FCN; write <stem>_label.png '
                    '(classes in VOC colours) and <stem>_overlay.png per image.')
    p.add_argument('images', nargs='+', metavar='IMAGE',
                   help='image files of any size: JPEG, PNG, BMP, GIF, TIFF, WebP or PPM')
    p.add_argument('--params', required=True,
                   help='FCN weights written by python -m d2lfcn.train (required)')
    p.add_argument('--out-dir', default='.',
                   help='folder for the PNGs, created if needed (default: .)')
    p.add_argument('--arch', choices=FCN_ARCHS,
                   help='the network the weights belong to (default: the arch in '
                        'the args.json next to --params, else fcn32s, D2L\'s FCN)')
    p.add_argument('--num-classes', type=int,
                   help='classes the weights were trained for (default: the value '
                        'in the args.json next to --params, else 21 for VOC)')
    p.add_argument('--mode', choices=['pad', 'tile'], default='pad',
                   help='pad: reflect-pad to a multiple of 32 and predict once; '
                        'tile: average overlapping windows (default: pad)')
    p.add_argument('--tile-size', type=int, nargs=2, default=[320, 480],
                   metavar=('H', 'W'),
                   help='window size for --mode tile, multiples of 32 '
                        '(default: 320 480, the training crop)')
    p.add_argument('--overlap', type=float, default=0.5,
                   help='fraction of a window shared with its neighbour in '
                        '--mode tile (default: 0.5)')
    p.add_argument('--gpus', type=int, default=None, metavar='N',
                   help='use the first of N GPUs; 0 means the CPU (default: '
                        'a GPU if there is one, else the CPU)')
    p.add_argument('--alpha', type=float, default=0.5,
                   help='opacity of the class colours in the overlay (default: 0.5)')
    args = p.parse_args(argv)
    if any(t <= 0 or t % STRIDE for t in args.tile_size):
        p.error(f'--tile-size must be positive multiples of {STRIDE}')
    if not 0 <= args.overlap < 1:
        p.error('--overlap must lie in [0, 1)')
    return args


def _outputs(images, out_dir):
    """Return {image: (label png, overlay png)}; refuse two images with one stem."""
    outputs, seen = {}, {}
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in seen:
            raise UserError(f'images {seen[stem]} and {path} would both write '
                            f'{stem}_label.png; predict them in separate --out-dir')
        seen[stem] = path
        outputs[path] = (os.path.join(out_dir, f'{stem}_label.png'),
                         os.path.join(out_dir, f'{stem}_overlay.png'))
    return outputs


def _write_png(path, rgb):
    write_png(path, rgb)


def main(argv=None):
    """Segment IMAGE... with the FCN in --params; see --help."""
    args = _parse(argv)
    outputs = _outputs(args.images, args.out_dir)
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise UserError(f'--out-dir {args.out_dir} is a file, not a folder')
    for path in args.images:  # check every input before writing anything
        _read_rgb(path)
    if args.gpus == 0:
        ctx = mx.cpu()
    else:
        devices = try_all_gpus()
        ctx = devices[:args.gpus][0] if args.gpus else devices[0]
    net = load_fcn(args.params, args.arch, args.num_classes, ctx)
    net.hybridize()
    for path in args.images:
        img = _read_rgb(path)
        pred = predict(net, img, ctx=ctx, mode=args.mode,
                       tile_size=tuple(args.tile_size), overlap=args.overlap)
        label_png, overlay_png = outputs[path]
        _write_png(label_png, label2image(pred))
        _write_png(overlay_png, overlay(img, pred, args.alpha))
        print(f'{path} -> {label_png}, {overlay_png}')


if __name__ == '__main__':
    run_cli(main)
