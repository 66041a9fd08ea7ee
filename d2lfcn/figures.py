"""Regenerate every figure the chapters show: `python -m d2lfcn.figures`.

Explained in chapters/index.md.
"""
import contextlib
import csv
import io
import os
import tempfile
import time

from . import diagrams
from .plotting import plot_predictions, plot_training_curves, save_figure
from .utils import (ArgumentParser, UserError, check_out_dir, is_fast_mode,
                    removed_on_error, run_cli)

# Figures drawn from nothing but the library: name -> function returning a Figure.
SCHEMATICS = {
    'fcn-architecture': diagrams.draw_fcn_architecture,
    'fcn-variants': diagrams.draw_fcn_variants,
    'trans-conv-example': diagrams.draw_trans_conv,
    'trans-conv-stride': lambda: diagrams.draw_trans_conv(strides=2),
    'trans-conv-padding': lambda: diagrams.draw_trans_conv(padding=1),
    'conv-as-matrix': diagrams.draw_conv_as_matrix,
    'bilinear-upsampling': diagrams.draw_bilinear_upsampling,
    'voc-legend': diagrams.draw_voc_legend,
}
# Figures of data or of trained models.
DATA_FIGURES = ['voc-samples', 'training-curves', 'predictions', 'classifier-heatmaps']
FIGURE_NAMES = list(SCHEMATICS) + DATA_FIGURES


def _parser():
    p = ArgumentParser(prog='python -m d2lfcn.figures',
                description='Regenerate every figure the chapters show, as PNG files.')
    p.add_argument('--out-dir', default='img',
                   help='folder for the PNGs, created if needed (default: img)')
    p.add_argument('--params', metavar='PATH',
                   help='FCN weights written by python -m d2lfcn.train; the training '
                        'curves come from metrics.csv next to them (default: train '
                        'a short demo model first)')
    p.add_argument('--data-dir', metavar='PATH',
                   help='VOC2012 folder for the sample and prediction figures '
                        '(default: the embedded demo dataset)')
    p.add_argument('--fast', action='store_true',
                   help='tiny datasets and training, for tests (default: off; '
                        'also on when D2LFCN_FAST=1)')
    p.add_argument('--only', nargs='+', choices=FIGURE_NAMES, metavar='NAME',
                   help='regenerate only these figures (default: all of '
                        + ', '.join(FIGURE_NAMES) + ')')
    p.add_argument('--dpi', type=int, default=100, help='resolution (default: 100)')
    return p


def _read_history(params):
    """Return the epoch records in metrics.csv next to `params`, as floats."""
    path = os.path.join(os.path.dirname(os.path.abspath(params)), 'metrics.csv')
    try:
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    except OSError:
        raise UserError(f'{path}: cannot read the training metrics that belong to '
                        f'--params {params}; pass the .params file of a '
                        'python -m d2lfcn.train run folder') from None
    return [{k: float(v) for k, v in row.items() if v not in ('', None)} for row in rows]


def _demo_run(voc_dir, run_dir, fast):
    """Train the demo FCN into `run_dir`; return its best parameters' path."""
    from .recipes import fit, recipe
    flags = dict(data_dir=voc_dir, out_dir=run_dir)
    if fast:
        flags.update(num_epochs=1, crop_size=[64, 64], batch_size=4, warmup_epochs=0)
    print('training the demo FCN for the training-curve and prediction figures ...',
          flush=True)
    with contextlib.redirect_stdout(io.StringIO()) if fast else contextlib.nullcontext():
        fit(recipe(demo=True, **flags))
    best = os.path.join(run_dir, 'best.params')
    return best if os.path.isfile(best) else os.path.join(run_dir, 'last.params')


def _prediction_figure(params, voc_dir, num=4):
    """Draw D2L's 3 x 4 grid for whole validation images: images, predictions, truth."""
    from .inference import predict_image
    from .model import load_fcn
    from .voc import read_voc_images
    net = load_fcn(params)  # the arch and classes the weights hold
    features, labels = read_voc_images(voc_dir, False, max_images=num)
    imgs = [f.asnumpy() for f in features]
    preds = [predict_image(net, img) for img in imgs]
    return plot_predictions(imgs, preds, [y.asnumpy() for y in labels])


def _classifier_figure(voc_dir, fast):
    """Draw class heatmaps of the pretrained classifier, or of the stand-in."""
    from . import classifier as clf
    kwargs = dict(num_epochs=1, max_images=24, bn_batches=4) if fast else {}
    model = clf.get_classifier(voc_dir, **kwargs)
    print(model.note)
    if model.pretrained:
        return clf.heatmap_figure(model, diagrams.sample_photo(), clf.PRETRAINED_SIZES)
    img, _, names = clf.standin_example(voc_dir)
    return clf.heatmap_figure(model, img, clf.STANDIN_SIZES, names)


def _draw(name, voc_dir, params, fast):
    """Return the Figure called `name`."""
    if name in SCHEMATICS:
        return SCHEMATICS[name]()
    if name == 'voc-samples':
        return diagrams.draw_voc_samples(voc_dir)
    if name == 'training-curves':
        return plot_training_curves(_read_history(params))
    if name == 'predictions':
        return _prediction_figure(params, voc_dir)
    return _classifier_figure(voc_dir, fast)


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
    if args.params is not None and not os.path.isfile(args.params):
        raise UserError(f'--params {args.params}: no such file')
    with tempfile.TemporaryDirectory(prefix='d2lfcn-figures-') as tmp:
        if args.data_dir is not None:
            voc_dir = find_voc_dir(args.data_dir)
        elif fast:  # a tiny set in the same layout, generated in a second
            voc_dir = make_synthetic_voc(tmp, num_train=24, num_val=8, min_size=64,
                                         max_size=128, small_size=64)
        else:
            voc_dir = demo_voc_dir()
        params = args.params
        if params is None and {'training-curves', 'predictions'} & set(wanted):
            params = _demo_run(voc_dir, os.path.join(tmp, 'run'), fast)
        with removed_on_error(args.out_dir):
            for name in wanted:
                start = time.time()
                fig = _draw(name, voc_dir, params, fast)
                path = os.path.join(args.out_dir, name + '.png')
                try:
                    save_figure(fig, path, args.dpi)
                except OSError as e:  # e.g. the disk filled up
                    raise UserError(f'cannot write {path} ({e.strerror or e})') from None
                print(f'{path} ({time.time() - start:.1f} s)', flush=True)


if __name__ == '__main__':
    run_cli(main)
