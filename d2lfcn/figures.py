"""Draw figures: image grids, training curves, D2L's prediction grid; `python -m d2lfcn.figures`.

Explained in chapters/fcn.md and chapters/index.md.
"""
import contextlib
import csv
import io
import os
import tempfile
import time

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mxnet import nd

from . import diagrams
from .predict import label2image
from .utils import ArgumentParser, UserError, is_fast_mode, run_cli

__all__ = ['show_images', 'plot_training_curves', 'plot_predictions']


def _numpy(img):
    return img.asnumpy() if isinstance(img, nd.NDArray) else np.asarray(img)


def _draw_images(axes, imgs, titles=None):
    """Show one image per axes, without ticks; 2-D label maps are coloured."""
    for i, (ax, img) in enumerate(zip(axes, imgs)):
        img = _numpy(img)
        if img.ndim == 2:
            img = label2image(img)
        # Nearest: each label pixel keeps its exact class colour on screen.
        ax.imshow(img, interpolation='nearest')
        ax.axes.get_xaxis().set_visible(False)
        ax.axes.get_yaxis().set_visible(False)
        if titles:
            ax.set_title(titles[i])
    return axes


def show_images(imgs, num_rows, num_cols, titles=None, scale=1.5):
    """Plot a list of images (D2L's show_images).

    Explained in chapters/fcn.md.
    """
    from matplotlib import pyplot as plt
    figsize = (num_cols * scale, num_rows * scale)
    _, axes = plt.subplots(num_rows, num_cols, figsize=figsize, squeeze=False)
    return _draw_images(axes.flatten(), imgs, titles)


def plot_training_curves(history):
    """Return a Figure of loss, train acc, test acc and test mIoU per epoch.

    `history` is a list of dicts with keys epoch, loss, train_acc, test_acc
    and test_miou (what d2lfcn.train records). Explained in chapters/fcn.md.
    """
    fig = Figure(figsize=(3.5, 2.5))
    ax = fig.add_subplot()
    epochs = [r['epoch'] for r in history]
    for key, label, fmt in (('loss', 'train loss', 'b-'), ('train_acc', 'train acc', 'm--'),
                            ('test_acc', 'test acc', 'g-.'), ('test_miou', 'test mIoU', 'r:')):
        ax.plot(epochs, [r[key] for r in history], fmt, label=label,
                marker='o' if len(history) < 3 else None, markersize=3)
    ax.set_xlabel('epoch')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs:
        ax.set_xlim(min(epochs) - 0.5 if len(epochs) == 1 else min(epochs),
                    max(epochs) + 0.5 if len(epochs) == 1 else max(epochs))
    ax.grid(True)
    ax.legend(fontsize='small')
    fig.tight_layout()
    return fig


def plot_predictions(imgs, preds, labels, scale=2):
    """Return D2L's grid: images on top, predicted label maps, then ground truth.

    `imgs` are (H, W, 3) images (floats in [0, 1] or uint8); `preds` and
    `labels` are (H, W) class-id maps (coloured with VOC's palette) or colour
    images. Explained in chapters/fcn.md.
    """
    n = len(imgs)
    fig = Figure(figsize=(n * scale, 3 * scale))
    axes = fig.subplots(3, n, squeeze=False)
    _draw_images(axes.flatten(), list(imgs) + list(preds) + list(labels))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.98,
                        wspace=0.05, hspace=0.05)
    return fig


# ------------------------------------------------ python -m d2lfcn.figures

# Figures drawn from nothing but the library: name -> function returning a Figure.
SCHEMATICS = {
    'fcn-architecture': diagrams.draw_fcn_architecture,
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
    from . import train
    argv = ['--demo', '--data-dir', voc_dir, '--out-dir', run_dir]
    if fast:
        argv += ['--num-epochs', '1', '--crop-size', '64', '64', '--batch-size', '4',
                 '--warmup-epochs', '0']
    print('training the demo FCN for the training-curve and prediction figures ...',
          flush=True)
    with contextlib.redirect_stdout(io.StringIO()) if fast else contextlib.nullcontext():
        train.main(argv)
    best = os.path.join(run_dir, 'best.params')
    return best if os.path.isfile(best) else os.path.join(run_dir, 'last.params')


def _prediction_figure(params, voc_dir, num=4):
    """Draw D2L's 3 x 4 grid for whole validation images: images, predictions, truth."""
    from .model import load_fcn
    from .predict import predict
    from .voc import read_voc_images
    net = load_fcn(params)  # the arch and classes of the run; UserError if unfit
    features, labels = read_voc_images(voc_dir, False, max_images=num)
    imgs = [f.asnumpy() for f in features]
    preds = [predict(net, img) for img in imgs]
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
        for name in wanted:
            start = time.time()
            fig = _draw(name, voc_dir, params, fast)
            path = diagrams.save_figure(fig, os.path.join(args.out_dir, name + '.png'), args.dpi)
            print(f'{path} ({time.time() - start:.1f} s)', flush=True)


if __name__ == '__main__':
    run_cli(main)
