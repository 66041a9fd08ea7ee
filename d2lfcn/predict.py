"""Segment image files with a trained FCN: `python -m d2lfcn.predict`.

The segmentation itself is `d2lfcn.inference.predict_image` (MXNet), or
`d2lfcn.runtime.OnnxFCN.predict` with --onnx, which imports no MXNet.
Explained in chapters/training-at-scale.md.
"""
import os

from .cli import ArgumentParser, run_cli
from .image import read_image, write_png
from .segmaps import FCN_ARCHS, STRIDE, add_legend, blend, colorize
from .utils import UserError, check_out_dir


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
                    '(classes in colours) and <stem>_overlay.png (the colours over '
                    'the photo, with a legend naming the classes) per image.')
    p.add_argument('images', nargs='+', metavar='IMAGE',
                   help='image files of any size: JPEG, PNG, BMP, GIF, TIFF, WebP or PPM')
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument('--params',
                         help='FCN weights written by python -m d2lfcn.train; class '
                              'names from classes.json beside them (one of --params '
                              'and --onnx is required)')
    weights.add_argument('--onnx', metavar='FILE',
                         help='an FCN exported by python -m d2lfcn.export --format onnx, '
                              'run by onnxruntime without MXNet; class names from the '
                              'file')
    p.add_argument('--out-dir', default='.',
                   help='folder for the PNGs, created if needed (default: .)')
    p.add_argument('--arch', choices=FCN_ARCHS,
                   help='the network the weights must hold: fcn32s (D2L\'s FCN), '
                        'fcn16s or fcn8s (default: the one they hold)')
    p.add_argument('--num-classes', type=int,
                   help='classes the weights must score (default: as many as '
                        'they score, 21 for VOC)')
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
    p.add_argument('--gpus', metavar='IDS',
                   help='comma-separated GPU ids, e.g. 0,1, as in python -m '
                        'd2lfcn.train; images take turns on them (default: every '
                        'GPU, or the CPU when there is none)')
    p.add_argument('--alpha', type=float, default=0.5,
                   help='opacity of the class colours in the overlay, from 0 '
                        '(photo only) to 1 (colours only) (default: 0.5)')
    args = p.parse_args(argv)
    if not 0 <= args.alpha <= 1:  # also refuses nan
        p.error(f'--alpha {args.alpha}: must lie in [0, 1]')
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


def _mxnet_fcn(args):
    """Return (segment(img, i), class names, palette) of the network in --params, on MXNet."""
    from .inference import predict_image
    from .model import load_fcn
    from .runfolder import read_classes_beside
    from .utils import get_devices
    devices = get_devices(args.gpus)
    net = load_fcn(args.params, args.arch, args.num_classes, devices)
    net.hybridize()
    names, palette = read_classes_beside(args.params, net.score.weight.shape[0])

    def segment(img, i):  # images take turns on the devices
        return predict_image(net, img, ctx=devices[i % len(devices)], mode=args.mode,
                             tile_size=tuple(args.tile_size), overlap=args.overlap)
    return segment, names, palette


def _onnx_fcn(args):
    """Return (segment(img, i), class names, palette) of the network in --onnx, no MXNet."""
    from .runtime import OnnxFCN
    for flag, given in (('--gpus', args.gpus), ('--mode tile', args.mode == 'tile')):
        if given:
            raise UserError(f'{flag}: runs with --params (MXNet); --onnx runs on the CPU, '
                            'in pad mode')
    fcn = OnnxFCN(args.onnx)
    if args.arch and args.arch != fcn.arch:
        raise UserError(f'--onnx {args.onnx} holds an {fcn.arch}, not --arch {args.arch}; '
                        f'pass --arch {fcn.arch}')
    if args.num_classes and args.num_classes != len(fcn.class_names):
        raise UserError(f'--onnx {args.onnx} scores {len(fcn.class_names)} classes, not '
                        f'--num-classes {args.num_classes}')
    return (lambda img, i: fcn.predict(img)), fcn.class_names, fcn.palette


def main(argv=None):
    """Segment IMAGE... with the FCN in --params (or --onnx); see --help."""
    args = _parse(argv)
    outputs = _outputs(args.images, args.out_dir)
    check_out_dir(args.out_dir)
    for path in args.images:  # check every input before writing anything
        _read_rgb(path)
    segment, names, palette = (_onnx_fcn if args.onnx else _mxnet_fcn)(args)
    for i, path in enumerate(args.images):
        img = _read_rgb(path)
        pred = segment(img, i)  # (H, W) class ids
        label_png, overlay_png = outputs[path]
        write_png(label_png, colorize(pred, palette))
        write_png(overlay_png, add_legend(blend(img, pred, args.alpha, palette), pred,
                                          names, palette))
        print(f'{path} -> {label_png}, {overlay_png}')


if __name__ == '__main__':
    run_cli(main)
