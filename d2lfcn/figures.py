"""Regenerate every figure the chapters show: `python -m d2lfcn.figures`.

Explained in chapters/index.md.
"""
import os
import tempfile
import time

from . import drawings
from .plotting import save_figure
from .cli import ArgumentParser, run_cli
from .utils import UserError, check_out_dir, is_fast_mode, removed_on_error

# Figures drawn from nothing but the library: name -> function returning a Figure.
SCHEMATICS = {
    'fcn-architecture': drawings.draw_fcn_architecture,
    'fcn-variants': drawings.draw_fcn_variants,
    'trans-conv-example': drawings.draw_trans_conv,
    'trans-conv-stride': lambda: drawings.draw_trans_conv(strides=2),
    'trans-conv-padding': lambda: drawings.draw_trans_conv(padding=1),
    'conv-as-matrix': drawings.draw_conv_as_matrix,
    'bilinear-upsampling': drawings.draw_bilinear_upsampling,
    'voc-legend': drawings.draw_voc_legend,
    # chapters/conv-layer.md and chapters/transposed-conv.md
    'conv-example': lambda: drawings.draw_conv(highlight=((0, 0), (1, 1))),
    'conv-padding': lambda: drawings.draw_conv(padding=1, highlight=((0, 1),)),
    'conv-stride': lambda: drawings.draw_conv(padding=1, strides=(3, 2),
                                              highlight=((0, 1), (1, 0))),
    'conv-multi-in': drawings.draw_conv_multi_in,
    'conv-multi-out': drawings.draw_conv_multi_out,
    'receptive-field': drawings.draw_receptive_field,
    'trans-conv-output-padding': lambda: drawings.draw_trans_conv(
        ((1, 2), (3, 4)), ((0, 1, 2), (3, 4, 5), (6, 7, 8)), strides=2, padding=1,
        output_padding=1),
    'trans-conv-as-conv': drawings.draw_trans_conv_as_conv,
}
# Figures of data or of trained models.
# (chapters/fcn.md plots its training curves and predictions live, from its own runs.)
DATA_FIGURES = ['voc-samples', 'segmentation-tasks']
FIGURE_NAMES = list(SCHEMATICS) + DATA_FIGURES


def _parser():
    p = ArgumentParser(prog='python -m d2lfcn.figures',
                description='Regenerate every figure the chapters show, as PNG files.')
    p.add_argument('--out-dir', default='img',
                   help='folder for the PNGs, created if needed (default: img)')
    p.add_argument('--data-dir', metavar='PATH',
                   help='VOC2012 folder for the sample and segmentation-task figures '
                        '(default: the embedded demo dataset)')
    p.add_argument('--fast', action='store_true',
                   help='tiny datasets and training, for tests (default: off; '
                        'also on when D2LFCN_FAST=1)')
    p.add_argument('--only', nargs='+', choices=FIGURE_NAMES, metavar='NAME',
                   help='regenerate only these figures (default: all of '
                        + ', '.join(FIGURE_NAMES) + ')')
    p.add_argument('--dpi', type=int, default=100, help='resolution (default: 100)')
    return p


def _tasks_figure(voc_dir):
    """Draw one labelled image as classification, detection and segmentation see it."""
    image, ids = drawings.task_example(voc_dir)
    synthetic = os.path.isfile(os.path.join(voc_dir, 'synthetic.json'))
    return drawings.draw_segmentation_tasks(
        image, ids, 'embedded dataset' if synthetic else 'VOC2012')


def _draw(name, voc_dir, fast):
    """Return the Figure called `name`."""
    if name in SCHEMATICS:
        return SCHEMATICS[name]()
    if name == 'voc-samples':
        return drawings.draw_voc_samples(voc_dir)
    return _tasks_figure(voc_dir)


def main(argv=None):
    """Regenerate the book's figures: see `python -m d2lfcn.figures --help`."""
    from .synthetic import demo_voc_dir, make_synthetic_voc
    from .voc import find_voc_dir
    args = _parser().parse_args(argv)
    if args.dpi <= 0:
        raise UserError(f'--dpi {args.dpi}: must be a positive number of dots per inch')
    check_out_dir(args.out_dir)
    fast = args.fast or is_fast_mode()
    wanted = args.only or FIGURE_NAMES
    with tempfile.TemporaryDirectory(prefix='d2lfcn-figures-') as tmp:
        if args.data_dir is not None:
            voc_dir = find_voc_dir(args.data_dir)
        elif fast:  # a tiny set in the same layout, generated in a second
            voc_dir = make_synthetic_voc(tmp, num_train=24, num_val=8, min_size=64,
                                         max_size=128, small_size=64)
        else:
            voc_dir = demo_voc_dir()
        with removed_on_error(args.out_dir):
            for name in wanted:
                start = time.time()
                fig = _draw(name, voc_dir, fast)
                path = os.path.join(args.out_dir, name + '.png')
                try:
                    save_figure(fig, path, args.dpi)
                except OSError as e:  # e.g. the disk filled up
                    raise UserError(f'cannot write {path} ({e.strerror or e})') from None
                print(f'{path} ({time.time() - start:.1f} s)', flush=True)


if __name__ == '__main__':
    run_cli(main)
