"""Run the book's training job in one call: the recipe's data, network and trainer, saved per epoch.

`python -m d2lfcn.train` turns its flags into `recipe(...)` and calls `fit`;
the chapters call `fit` the same way. How this process takes part (alone,
or as one of several workers) is the business of `distributed.placement`.
Explained in chapters/training-at-scale.md.
"""
import argparse
import math
import os

import mxnet as mx
import numpy as np
from mxnet import nd

from . import distributed
from .loop import (Callback, EpochSeeds, Hooks, LearningRateSchedule, LossAndAccuracy,
                   SegmentationLoss, TrainingDiverged, WholeImageScores,
                   background_baseline, hybridize_for_training, lr_at, train_ch13)
from .model import FCN_ARCHS, STRIDE, get_fcn
from .runfolder import RunFolder, interrupts_deferred, new_run_id, read_args
from .utils import (Arg, UserError, check_mxnet_path, check_out_dir, default_data_dir,
                    get_devices, why_write_failed)
from .maskfolder import FolderSegDataset, is_mask_folder, mask_folder_split
from .segdata import segmentation_loaders
from .segmaps import voc_palette
from .voc import VOCSegDataset, find_voc_dir

__all__ = ['BOOK_RECIPE', 'DEMO_RECIPE', 'OPTIONS', 'recipe', 'SaveEpochs', 'fit']

# The book's recipe (D2L's FCN section) and the embedded demo's.
BOOK_RECIPE = dict(num_epochs=5, batch_size=32, crop_size=[320, 480], lr=0.1,
                   wd=1e-3, momentum=0.0, lr_schedule='constant', warmup_epochs=0.0,
                   out_dir=os.path.join('runs', 'fcn'))
DEMO_RECIPE = dict(num_epochs=6, batch_size=16, crop_size=[128, 128], lr=0.05,
                   wd=1e-4, momentum=0.9, lr_schedule='poly', warmup_epochs=1.0,
                   out_dir=os.path.join('runs', 'demo'))
# Everything else `fit` reads, with its default; the names are the train flags'.
OPTIONS = dict(data_dir=None, demo=False, demo_layout='voc', arch='fcn32s',
               no_pretrained_base=False, backbone_params=None, boundary='ignore', gpus=None,
               cpus=None,
               kvstore='device', amp=False, num_workers=None, resume=False, seed=0,
               no_hybridize=False)

# Options that change what a resumed run computes, compared with the saved run.
_TRAJECTORY = ['data_dir', 'demo', 'batch_size', 'crop_size', 'lr', 'wd',
               'momentum', 'lr_schedule', 'warmup_epochs', 'boundary', 'seed']


def recipe(demo=False, **options):
    """Return the options of a training run: the book's recipe (or the demo's) and `options`.

    Options left out or None take the recipe's value, then `OPTIONS`'. Values
    out of range raise UserError naming the option.
    Explained in chapters/training-at-scale.md.
    """
    unknown = set(options) - set(BOOK_RECIPE) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
    args = dict(OPTIONS, **(DEMO_RECIPE if demo else BOOK_RECIPE), demo=demo)
    args.update({k: v for k, v in options.items() if v is not None})
    args['crop_size'] = list(args['crop_size'])
    if demo and args['backbone_params'] is None:
        args['no_pretrained_base'] = True  # the demo trains from scratch
    _check(args)
    return argparse.Namespace(**args)


def _check(args):
    """Raise UserError for the first option out of range."""
    h, w = args['crop_size']
    if h <= 0 or w <= 0 or h % STRIDE or w % STRIDE:
        raise UserError(f'{{crop}}: height and width must be positive multiples of '
                        f'{STRIDE} (the FCN downsamples by {STRIDE})',
                        crop=Arg('crop_size', [h, w]))
    check_out_dir(args['out_dir'])
    check_mxnet_path(args['out_dir'], 'out_dir')
    ranges = (('num_epochs', args['num_epochs'] >= 1, 'at least 1'),
              ('batch_size', args['batch_size'] >= 1, 'at least 1'),
              ('lr', math.isfinite(args['lr']) and args['lr'] > 0, 'positive'),
              ('wd', math.isfinite(args['wd']) and args['wd'] >= 0, 'not negative'),
              ('momentum', 0 <= args['momentum'] < 1, 'in [0, 1)'),
              ('warmup_epochs', 0 <= args['warmup_epochs'] <= args['num_epochs'],
               'between 0 and the number of epochs'),
              ('cpus', args['cpus'] is None or args['cpus'] >= 1, 'at least 1'),
              ('num_workers', args['num_workers'] is None or args['num_workers'] >= 0,
               'not negative'),
              ('seed', 0 <= args['seed'] < 2 ** 32, 'in [0, 2**32)'),
              ('arch', args['arch'] in FCN_ARCHS, 'one of ' + ', '.join(FCN_ARCHS)),
              ('boundary', args['boundary'] in ('ignore', 'background'),
               'ignore or background'),
              ('demo_layout', args['demo_layout'] in ('voc', 'folder'), 'voc or folder'))
    for name, ok, allowed in ranges:
        if not ok:
            raise UserError(f'{{arg}}: out of range (must be {allowed})',
                            arg=Arg(name, args[name]))


def _check_devices(args, devices):
    """Refuse amp on the CPU and batches that leave a device without examples."""
    amp = Arg('amp', True)
    if args.amp and any(d.device_type != 'gpu' for d in devices):
        why = ('{cpus} trains on the CPU' if args.cpus else 'MXNet sees no GPU')
        raise UserError(f'{{amp}}: mixed precision needs GPUs, but {why}; drop {{amp}}',
                        amp=amp, cpus=Arg('cpus', args.cpus))
    if args.batch_size < len(devices):
        raise UserError(f'{{arg}}: smaller than the {len(devices)} devices, each of '
                        'which needs an example; pass a larger {larger} or fewer '
                        'devices', arg=Arg('batch_size', args.batch_size),
                        larger=Arg('batch_size'))


def _data_dir(args):
    """Return the dataset folder to train on (VOC2012 or a mask folder), making or downloading it."""
    from . import synthetic, voc
    if args.data_dir is not None:
        arg = Arg('data_dir', args.data_dir)
        try:
            os.stat(args.data_dir)
        except FileNotFoundError:
            raise UserError('{arg}: no such folder', arg=arg) from None
        except OSError as e:  # e.g. a parent folder that may not be searched
            raise UserError(f'{{arg}}: cannot look there ({e.strerror})', arg=arg) from None
        if is_mask_folder(args.data_dir):
            return args.data_dir
        return find_voc_dir(args.data_dir)
    if args.demo:
        return synthetic.demo_voc_dir(layout=args.demo_layout)
    try:
        return voc.download_voc2012()  # its errors point to data_dir and demo
    except OSError as e:
        raise UserError(f'cannot get VOC2012 into {default_data_dir()} ({e}); pass '
                        '{data_dir} to an existing VOCdevkit/VOC2012, or try {demo}',
                        data_dir=Arg('data_dir', 'PATH'), demo=Arg('demo', True)) from None


def _datasets(args, data_dir, split):
    """Return (train, test crops, whole validation images): every worker checks all.

    `split` is the (train, val) names a mask-folder run recorded, or None.
    """
    crop = tuple(args.crop_size)
    if is_mask_folder(data_dir):
        split = split or mask_folder_split(data_dir, args.seed)[:2]
        train = FolderSegDataset(True, crop, data_dir, args.boundary, split)
        whole = FolderSegDataset(False, None, data_dir, args.boundary, split)
    else:
        train = VOCSegDataset(True, crop, data_dir, args.boundary)
        whole = VOCSegDataset(False, None, data_dir, args.boundary)
    return train, whole.with_crop(crop), whole


def _recorded_split(data_dir, state, seed):
    """Return the split a mask-folder run must record: the resumed run's, or a drawn one."""
    if not is_mask_folder(data_dir):
        return None
    if state is not None and state.get('split'):
        return state['split']['train'], state['split']['val']
    train, val, made = mask_folder_split(data_dir, seed)
    return (train, val) if made else None


def _fcn(args, devices, num_classes):
    """Build the network `args.arch` names, after amp swaps in float16 operators."""
    if args.amp:
        from mxnet.contrib import amp
        amp.init()  # must precede building the network
    mx.random.seed(args.seed)
    return get_fcn(num_classes, pretrained_base=not args.no_pretrained_base,
                   ctx=devices, backbone_params=args.backbone_params, arch=args.arch)


def _trainer(args, net, place):
    """Return SGD with the recipe's hyperparameters, combining gradients as `place` does."""
    hyper = {'learning_rate': args.lr, 'wd': args.wd, 'momentum': args.momentum}
    trainer = place.make_trainer(net.collect_params(), hyper)
    if args.amp:
        from mxnet.contrib import amp
        amp.init_trainer(trainer)
    return trainer


def _check_resume(args, state):
    """Refuse to resume a run that is complete or of another arch; note changed options."""
    out_dir = args.out_dir
    if state['epoch'] >= args.num_epochs:
        raise UserError(f"{{resume}}: {out_dir} already holds {state['epoch']} epochs; "
                        'pass a larger {num_epochs} to train on',
                        resume=Arg('resume', True), num_epochs=Arg('num_epochs'))
    saved = state.get('arch', 'fcn32s')
    if saved != args.arch:
        raise UserError(f'{{resume}}: {out_dir} holds an {saved} run, not {{arch}}; '
                        'pass {saved}, or another {out_dir}',
                        resume=Arg('resume', True), arch=Arg('arch', args.arch),
                        saved=Arg('arch', saved), out_dir=Arg('out_dir'))
    saved_args = state.get('args') or read_args(out_dir)
    # A decaying schedule spans the whole run, so its length matters too.
    names = _TRAJECTORY + (['num_epochs'] if args.lr_schedule != 'constant' else [])
    for name in names:
        if name in saved_args and saved_args[name] != getattr(args, name):
            print(f"note: --{name.replace('_', '-')} is {getattr(args, name)} now, "
                  f'{saved_args[name]} in the run being resumed')


def _best_score(record):
    """Return the score that picks best.params: whole-image mIoU, else crop mIoU."""
    return record.get('whole_miou', record['test_miou'])


class SaveEpochs(Callback):
    """Save every epoch into a run folder: checkpoint, best weights, metrics, curves.

    Explained in chapters/training-at-scale.md.
    """

    def __init__(self, folder, net, trainer, args, state=None, saved_args=None,
                 classes=None, split=None):
        self.folder, self.net, self.trainer, self.args = folder, net, trainer, args
        self.history = list(state['history']) if state else []
        self.best = (dict(miou=state['best_miou'], epoch=state['best_epoch'])
                     if state else dict(miou=-1.0, epoch=0))
        self.run_id = (state or {}).get('run_id') or new_run_id()
        # What state.json records besides the epochs: the run's options, its
        # classes (names, colours), a drawn split, and the all-background scores.
        self.saved_args, self.classes, self.split = saved_args or {}, classes, split
        self.baseline = None

    def on_epoch_end(self, record):
        from .plotting import plot_training_curves
        self.history.append(record)
        is_best = _best_score(record) > self.best['miou']  # False for NaN
        if is_best:
            self.best.update(miou=_best_score(record), epoch=record['epoch'])
        state = dict(epoch=record['epoch'], best_miou=self.best['miou'],
                     best_epoch=self.best['epoch'], baseline=self.baseline,
                     arch=self.args.arch, run_id=self.run_id, classes=self.classes,
                     split=self.split)
        try:
            with interrupts_deferred():
                self.folder.save_epoch(self.net, self.trainer, state, self.history,
                                       self.saved_args, is_best)
            self.folder.write_figure('curves', plot_training_curves(self.history))
        except (OSError, mx.base.MXNetError) as e:
            kept = (f"the checkpoint of epoch {record['epoch'] - 1} is kept; make room "
                    'and continue with {resume}' if record['epoch'] > 1
                    else 'no checkpoint was written')
            raise UserError(f"cannot save epoch {record['epoch']} into "
                            f'{self.args.out_dir} ({why_write_failed(e)}); {kept}',
                            resume=Arg('resume', True)) from None


def _save_predictions(folder, net, dataset, devices, classes, n=4):
    """Draw D2L's grid: n validation crops, predicted label maps, ground truth, a legend."""
    from .plotting import plot_predictions
    from .segmaps import RGB_MEAN, RGB_STD
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    X = nd.stack(*[x for x, _ in items]).as_in_context(devices[0])  # (n, 3, h, w)
    preds = net(X).argmax(axis=1).asnumpy().astype(np.uint8)         # (n, h, w)
    imgs = [np.clip(x.asnumpy().transpose(1, 2, 0) * RGB_STD + RGB_MEAN, 0, 1)
            for x, _ in items]                                         # (h, w, 3)
    labels = [y.asnumpy().astype(np.uint8) for _, y in items]          # (h, w)
    folder.write_figure('predictions', plot_predictions(
        imgs, preds, labels, class_names=classes['names'], palette=classes['palette']))


def fit(args, devices=None, callbacks=()):
    """Train the FCN `args` describes (see `recipe`) into the run folder `args.out_dir`.

    Returns the list of epoch records. Each epoch is saved so that whatever
    stops the process, `args.out_dir` holds one complete, resumable epoch;
    `args.resume` continues from it. `callbacks` are more `Callback`s for the
    loop (e.g. a progress bar). Explained in chapters/training-at-scale.md.
    """
    devices = devices or get_devices(args.gpus, args.cpus)
    _check_devices(args, devices)
    place = distributed.placement(args.kvstore)
    folder = RunFolder(args.out_dir)
    place.claim(folder)
    try:
        return _fit(args, devices, callbacks, place, folder)
    finally:
        folder.unlock()


def _fit(args, devices, callbacks, place, folder):
    state = folder.read_state() if args.resume else None
    if state is not None:
        _check_resume(args, state)
    data_dir = _data_dir(args)
    split = _recorded_split(data_dir, state, args.seed)
    train_set, test_set, whole_set = _datasets(args, data_dir, split)
    # A distributed worker meets the others here. From now on, every worker
    # must run the same steps: an error on one alone would leave the rest waiting.
    out = place.join(folder)
    train_iter, test_iter = segmentation_loaders(train_set, test_set, args.batch_size,
                                                 args.num_workers, place.num_workers,
                                                 place.rank)
    num_classes = len(train_set.classes)
    net, trainer, loss = _model(args, devices, place, num_classes, folder, state)
    saver = SaveEpochs(out, net, trainer, args, state,
                       saved_args=dict(vars(args), devices=[str(d) for d in devices],
                                       voc_dir=data_dir, dist_workers=place.num_workers),
                       classes=dict(names=train_set.classes,
                                    palette=voc_palette()[:num_classes].tolist()),
                       split=dict(train=split[0], val=split[1]) if split else None)
    whole_set = place.shard(whole_set)
    hooks = Hooks(start_epoch=state['epoch'] if state else 0)
    place.watch(net, train_set, train_iter.batch_sampler, hooks.start_epoch)
    for callback in (EpochSeeds(place.seed(args.seed)),
                     LearningRateSchedule(trainer, _lr_fn(args, len(train_iter))),
                     *callbacks, place,
                     WholeImageScores(net, whole_set, devices, num_classes, hooks.reduce),
                     saver):
        hooks.add(callback)
    saver.baseline = _baselines(test_iter, whole_set, num_classes, hooks)
    _train(args, devices, place, net, train_iter, test_iter, loss, trainer, hooks, saver)
    _save_predictions(out, net, test_set, devices, saver.classes)
    print(f"best whole-image mIoU {saver.best['miou']:.3f} (epoch {saver.best['epoch']}, "
          f"baseline {saver.baseline['whole_miou']:.3f}); saved in {args.out_dir}")
    return saver.history


def _model(args, devices, place, num_classes, folder, state):
    """Return (network, trainer, training graph), resumed from `state` if given."""
    net = _fcn(args, devices, num_classes)
    trainer = _trainer(args, net, place)
    if state is not None:
        params, states = folder.checkpoint_files(state)
        net.load_parameters(params, ctx=devices)
        trainer.load_states(states)
        print(f"resuming {args.out_dir} after epoch {state['epoch']}")
    h, w = args.crop_size
    place.share_parameters(net, trainer, nd.zeros((1, 3, h, w), ctx=devices[0]))
    # The training graph: network, loss and pixel counts in one cached graph.
    loss = LossAndAccuracy(net, SegmentationLoss())
    if not args.no_hybridize:
        hybridize_for_training(loss, len(devices))
        # The network alone evaluates crops and whole images (a new shape
        # each): no static memory. The training graph keeps its own.
        net.hybridize()
    return net, trainer, loss


def _lr_fn(args, num_batches):
    """Return the learning rate of every update, as the recipe schedules it."""
    def lr_fn(step):
        return lr_at(step, args.num_epochs * num_batches, args.lr, args.lr_schedule,
                     round(args.warmup_epochs * num_batches))
    return lr_fn


def _train(args, devices, place, net, train_iter, test_iter, loss, trainer, hooks, saver):
    """Run D2L's loop; a diverging loss says which checkpoint is kept."""
    # Errors from here on may meet one worker alone: it must not wait for the others.
    with place.abandon_on_error():
        try:
            train_ch13(net, train_iter, test_iter, loss, trainer, args.num_epochs,
                       devices, hooks=hooks)
        except TrainingDiverged as e:
            kept = (f"the checkpoint of epoch {saver.history[-1]['epoch']} in "
                    f'{args.out_dir} is kept' if saver.history
                    else 'no checkpoint was written')
            raise TrainingDiverged(f'{e}; {kept}; try a smaller {{lr}}',
                                   lr=Arg('lr')) from None


def _baselines(test_iter, whole_set, num_classes, hooks):
    """Print and return the all-background scores of the test crops and whole images."""
    base = background_baseline(test_iter, num_classes, hooks.reduce)
    whole = background_baseline(((None, y.expand_dims(0)) for _, y in whole_set),
                                num_classes, hooks.reduce)
    print(f"all-background baseline: test acc {base['pixel_acc']:.3f}, test mIoU "
          f"{base['mean_iou']:.3f}\n  whole images: pixel acc {whole['pixel_acc']:.3f}, "
          f"mIoU {whole['mean_iou']:.3f}")
    return dict(base, whole_miou=whole['mean_iou'], whole_acc=whole['pixel_acc'])
