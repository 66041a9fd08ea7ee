"""Export a trained FCN for deployment: `python -m d2lfcn.export`.

The export itself is `d2lfcn.deploy.export_fcn`.
Explained in chapters/training-at-scale.md.
"""
import os

from mxnet.base import MXNetError

from .cli import ArgumentParser, run_cli
from .deploy import export_fcn
from .model import FCN_ARCHS, STRIDE, load_fcn
from .runfolder import read_classes_beside
from .utils import UserError, check_mxnet_path, check_out_dir, why_write_failed


def _parse(argv):
    p = ArgumentParser(
        prog='python -m d2lfcn.export',
        description='Export trained FCN weights as an MXNet symbol file and a '
                    'params file (HybridBlock.export), loadable without d2lfcn by '
                    "mxnet.gluon.SymbolBlock.imports(SYMBOL, ['data'], PARAMS), "
                    'by mxnet.mod.Module or by the C++ API; with --format onnx, '
                    'also as one ONNX file (opset 13) that runs without MXNet, e.g. '
                    'python -m d2lfcn.predict --onnx FILE, or onnxruntime.',
        epilog="The graphs' input 'data' is a float32 (N, 3, H, W) batch of RGB "
               'images scaled to [0, 1] and normalised with the ImageNet mean '
               '(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), H and W '
               "multiples of 32; the output ('scores' in ONNX) is (N, classes, H, W) "
               'class scores. The ONNX file carries the class names and colours '
               '(from classes.json beside --params) as metadata.')
    a = p.add_argument
    a('--params', required=True,
      help='FCN weights written by python -m d2lfcn.train, e.g. runs/fcn/best.params '
           '(required)')
    a('--out-dir', required=True,
      help='folder for <prefix>-symbol.json and <prefix>-0000.params (and '
           '<prefix>.onnx), created if needed (required)')
    a('--format', choices=['mxnet', 'onnx'], default='mxnet',
      help="mxnet: MXNet's symbol and params; onnx: those and <prefix>.onnx "
           "beside them (needs pip install 'd2lfcn[onnx]') (default: mxnet)")
    a('--arch', choices=FCN_ARCHS,
      help="the network the weights must hold: fcn32s (D2L's FCN), fcn16s or "
           'fcn8s (default: the one they hold)')
    a('--num-classes', type=int,
      help='classes the weights must score (default: as many as they score, '
           '21 for VOC)')
    a('--height', type=int, default=320,
      help='height of the input the graph is traced on, a multiple of 32; the '
           'exported graph accepts other sizes too (default: 320)')
    a('--width', type=int, default=480,
      help='width of that input, a multiple of 32 (default: 480)')
    a('--prefix',
      help='file name prefix (default: the arch, e.g. fcn32s)')
    args = p.parse_args(argv)
    for flag, value in (('--height', args.height), ('--width', args.width)):
        if value <= 0 or value % STRIDE:
            raise UserError(f'{flag} {value}: must be a positive multiple of {STRIDE}')
    if args.prefix is not None and (not args.prefix or os.sep in args.prefix):
        raise UserError(f'--prefix {args.prefix!r}: must be a non-empty file name, '
                        'without a folder')
    return args


def main(argv=None):
    """Export the FCN in --params to --out-dir; see --help."""
    args = _parse(argv)
    check_out_dir(args.out_dir)
    check_mxnet_path(args.out_dir, 'out_dir')
    net = load_fcn(args.params, args.arch, args.num_classes)
    names, palette = read_classes_beside(args.params, net.score.weight.shape[0])
    prefix = args.prefix or net.arch
    try:
        files = export_fcn(net, args.out_dir, prefix, args.height, args.width,
                           args.format == 'onnx', names, palette)
    except (OSError, MXNetError) as e:
        why = why_write_failed(e)
        raise UserError(f'cannot write into --out-dir {args.out_dir}: {why}') from None
    print(f"{net.arch} ({args.params}) -> {', '.join(files)}")


if __name__ == '__main__':
    run_cli(main)
