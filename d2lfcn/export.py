"""Export a trained FCN for deployment: `python -m d2lfcn.export`.

Explained in chapters/training-at-scale.md.
"""
import os
import shutil
import tempfile

from mxnet import nd
from mxnet.base import MXNetError

from .model import FCN_ARCHS, STRIDE, load_fcn
from .cli import ArgumentParser, run_cli
from .utils import (UserError, check_mxnet_path, check_out_dir, removed_on_error,
                    why_write_failed)

__all__ = ['export_fcn']


def export_fcn(net, out_dir, prefix, height=320, width=480):
    """Write `net` as <prefix>-symbol.json and <prefix>-0000.params into `out_dir`.

    `net` is hybridized and traced on a (1, 3, height, width) input; the
    graph accepts any batch size, and any height and width that are multiples
    of 32. The files are written into a temporary folder and moved into
    `out_dir` only when both are complete. Returns (symbol file, params file).
    Explained in chapters/training-at-scale.md.
    """
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    net.hybridize()
    net(nd.zeros((1, 3, height, width), ctx=ctx)).wait_to_read()  # build the graph
    names = [f'{prefix}-0000.params', f'{prefix}-symbol.json']
    with removed_on_error(out_dir):
        tmp = tempfile.mkdtemp(prefix='.export-', dir=out_dir)
        try:
            net.export(os.path.join(tmp, prefix), epoch=0)
            for name in names:  # the weights first: a symbol file implies its weights
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out_dir, names[1]), os.path.join(out_dir, names[0])


def _parse(argv):
    p = ArgumentParser(
        prog='python -m d2lfcn.export',
        description='Export trained FCN weights as an MXNet symbol file and a '
                    'params file (HybridBlock.export), loadable without d2lfcn by '
                    "mxnet.gluon.SymbolBlock.imports(SYMBOL, ['data'], PARAMS), "
                    'by mxnet.mod.Module or by the C++ API.',
        epilog="The graph's input 'data' is a float32 (N, 3, H, W) batch of RGB "
               'images scaled to [0, 1] and normalised with the ImageNet mean '
               '(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), H and W '
               'multiples of 32; its output is (N, classes, H, W) class scores.')
    a = p.add_argument
    a('--params', required=True,
      help='FCN weights written by python -m d2lfcn.train, e.g. runs/fcn/best.params '
           '(required)')
    a('--out-dir', required=True,
      help='folder for <prefix>-symbol.json and <prefix>-0000.params, created if '
           'needed (required)')
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
    prefix = args.prefix or net.arch
    try:
        symbol_file, params_file = export_fcn(net, args.out_dir, prefix,
                                              args.height, args.width)
    except (OSError, MXNetError) as e:
        why = why_write_failed(e)
        raise UserError(f'cannot write into --out-dir {args.out_dir}: {why}') from None
    print(f'{net.arch} ({args.params}) -> {symbol_file}, {params_file}')


if __name__ == '__main__':
    run_cli(main)
