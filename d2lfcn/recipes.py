"""Run the book's training job as one call: recipe, data, network, trainer, run folder.

`python -m d2lfcn.train` turns its flags into `recipe(...)` and calls `fit`;
the figures command and the chapters call `fit` the same way.
Explained in chapters/training-at-scale.md.
"""
import argparse
import json
import math
import os

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

from . import distributed
from .model import FCN_ARCHS, STRIDE, get_fcn
from .runfolder import FILES, RunFolder, interrupts_deferred, new_run_id, read_args
from .training import (LossAndAccuracy, SegmentationLoss, TrainingDiverged,
                       background_baseline, evaluate_whole_images,
                       hybridize_for_training, lr_at, train_ch13)
from .utils import (Terminated, UserError, atomic_path, check_mxnet_path, check_out_dir, default_data_dir, try_all_gpus)
from .voc import VOC_CLASSES, VOCSegDataset, find_voc_dir, voc_loaders

__all__ = ['BOOK_RECIPE', 'DEMO_RECIPE', 'OPTIONS', 'recipe', 'fit']

# The book's recipe (D2L's FCN section) and the embedded demo's.
BOOK_RECIPE = dict(num_epochs=5, batch_size=32, crop_size=[320, 480], lr=0.1,
                   wd=1e-3, momentum=0.0, lr_schedule='constant', warmup_epochs=0.0,
                   out_dir=os.path.join('runs', 'fcn'))
DEMO_RECIPE = dict(num_epochs=6, batch_size=16, crop_size=[128, 128], lr=0.05,
                   wd=1e-4, momentum=0.9, lr_schedule='poly', warmup_epochs=1.0,
                   out_dir=os.path.join('runs', 'demo'))
# Everything else `fit` reads, with its default; the names are the train flags'.
OPTIONS = dict(data_dir=None, demo=False, arch='fcn32s', no_pretrained_base=False,
               backbone_params=None, boundary='ignore', gpus=None, cpus=None,
               kvstore='device', amp=False, num_workers=None, resume=False, seed=0,
               no_hybridize=False)

# Flags that change what a resumed run computes, compared with the saved run.
_TRAJECTORY = ['data_dir', 'demo', 'batch_size', 'crop_size', 'lr', 'wd',
               'momentum', 'lr_schedule', 'warmup_epochs', 'boundary', 'seed']


def recipe(demo=False, **flags):
    """Return the options of a training run: the book's recipe (or the demo's) and `flags`.

    Flags left out or None take the recipe's value, then `OPTIONS`'. Values
    out of range raise UserError naming the flag.
    Explained in chapters/training-at-scale.md.
    """
    unknown = set(flags) - set(BOOK_RECIPE) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown options: {', '.join(sorted(unknown))}")
    args = dict(OPTIONS, **(DEMO_RECIPE if demo else BOOK_RECIPE), demo=demo)
    args.update({k: v for k, v in flags.items() if v is not None})
    args['crop_size'] = list(args['crop_size'])
    if demo and args['backbone_params'] is None:
        args['no_pretrained_base'] = True  # the demo trains from scratch
    _check(args)
    return argparse.Namespace(**args)


def _check(args):
    """Raise UserError for the first option out of range."""
    h, w = args['crop_size']
    if h <= 0 or w <= 0 or h % STRIDE or w % STRIDE:
        raise UserError(f'--crop-size {h} {w}: height and width must be positive '
                        f'multiples of {STRIDE} (the FCN downsamples by {STRIDE})')
    check_out_dir(args['out_dir'])
    check_mxnet_path(args['out_dir'], 'out_dir')
    ranges = (('num_epochs', args['num_epochs'] >= 1),
              ('batch_size', args['batch_size'] >= 1),
              ('lr', math.isfinite(args['lr']) and args['lr'] > 0),
              ('wd', math.isfinite(args['wd']) and args['wd'] >= 0),
              ('momentum', 0 <= args['momentum'] < 1),
              ('warmup_epochs', 0 <= args['warmup_epochs'] <= args['num_epochs']),
              ('cpus', args['cpus'] is None or args['cpus'] >= 1),
              ('num_workers', args['num_workers'] is None or args['num_workers'] >= 0),
              ('seed', 0 <= args['seed'] < 2 ** 32),
              ('arch', args['arch'] in FCN_ARCHS),
              ('boundary', args['boundary'] in ('ignore', 'background')))
    for name, ok in ranges:
        if not ok:
            raise UserError(f"--{name.replace('_', '-')} {args[name]}: out of range "
                            '(see --help)')


def devices_of(args):
    """Return the contexts `args.gpus` or `args.cpus` name (default: every GPU, else the CPU)."""
    if args.cpus:
        return [mx.cpu(i) for i in range(args.cpus)]
    if args.gpus is None:
        return try_all_gpus()
    try:
        ids = [int(i) for i in str(args.gpus).split(',') if i.strip()]
    except ValueError:
        raise UserError(f'--gpus {args.gpus}: expected comma-separated GPU ids, '
                        'e.g. 0,1') from None
    count = mx.context.num_gpus()
    bad = [i for i in ids if not 0 <= i < count]
    if not ids or bad:
        raise UserError(f'--gpus {args.gpus}: MXNet sees {count} GPU(s); '
                        'leave out --gpus to use the CPU')
    return [mx.gpu(i) for i in ids]


def _check_devices(args, devices):
    """Refuse --amp on the CPU and batches that leave a device without examples."""
    if args.amp and any(d.device_type != 'gpu' for d in devices):
        why = '--cpus trains on the CPU' if args.cpus else 'MXNet sees no GPU'
        raise UserError(f'--amp: mixed precision needs GPUs, but {why}; drop --amp')
    if args.batch_size < len(devices):
        raise UserError(f'--batch-size {args.batch_size}: smaller than the '
                        f'{len(devices)} devices, each of which needs an example; '
                        'pass a larger --batch-size or fewer devices')


def _voc_dir(args):
    """Return the VOC2012 folder to train on, generating or downloading it."""
    from . import synthetic, voc
    if args.data_dir is not None:
        try:
            os.stat(args.data_dir)
        except FileNotFoundError:
            raise UserError(f'--data-dir {args.data_dir}: no such folder') from None
        except OSError as e:  # e.g. a parent folder that may not be searched
            raise UserError(f'--data-dir {args.data_dir}: cannot look there '
                            f'({e.strerror})') from None
        return find_voc_dir(args.data_dir)
    if args.demo:
        return synthetic.demo_voc_dir()
    try:
        return voc.download_voc2012()  # its errors point to --data-dir and --demo
    except OSError as e:
        raise UserError(f'cannot get VOC2012 into {default_data_dir()} ({e}); pass '
                        '--data-dir PATH to an existing VOCdevkit/VOC2012, or try '
                        '--demo') from None


def _datasets(args, voc_dir):
    """Return (train, test crops, whole validation images): every worker checks all."""
    crop = tuple(args.crop_size)
    train = VOCSegDataset(True, crop, voc_dir, args.boundary)
    whole = VOCSegDataset(False, None, voc_dir, args.boundary)
    return train, whole.with_crop(crop), whole


def _trainer(args, net, workers):
    """Return SGD with the recipe's hyperparameters, combining gradients per --kvstore."""
    hyper = {'learning_rate': args.lr, 'wd': args.wd, 'momentum': args.momentum}
    if workers is None:
        trainer = gluon.Trainer(net.collect_params(), 'sgd', hyper, kvstore=args.kvstore)
    else:
        # The servers add up the workers' gradients and each worker applies the
        # same update itself: updating on the servers would keep the optimizer
        # there, out of reach of set_learning_rate and save_states. Scaling by
        # 1/workers makes each update the mean over all the workers' examples.
        hyper['rescale_grad'] = 1 / workers.num_workers
        trainer = gluon.Trainer(net.collect_params(), 'sgd', hyper, kvstore=workers.kv,
                                update_on_kvstore=False)
    if args.amp:
        from mxnet.contrib import amp
        amp.init_trainer(trainer)
    return trainer


def _fcn(args, devices, num_classes):
    """Build the network --arch names, after --amp swaps in float16 operators."""
    if args.amp:
        from mxnet.contrib import amp
        amp.init()  # must precede building the network
    mx.random.seed(args.seed)
    return get_fcn(num_classes, pretrained_base=not args.no_pretrained_base,
                   ctx=devices, backbone_params=args.backbone_params, arch=args.arch)


def _check_resume(args, state):
    """Refuse to resume a run that is complete or of another arch; note changed flags."""
    out_dir = args.out_dir
    if state['epoch'] >= args.num_epochs:
        raise UserError(f"--resume: {out_dir} already holds {state['epoch']} epochs; "
                        'pass a larger --num-epochs to train on')
    saved = state.get('arch', 'fcn32s')
    if saved != args.arch:
        raise UserError(f'--resume: {out_dir} holds an {saved} run, not --arch '
                        f'{args.arch}; pass --arch {saved}, or another --out-dir')
    flags = state.get('args') or read_args(out_dir)
    # A decaying schedule spans the whole run, so its length matters too.
    names = _TRAJECTORY + (['num_epochs'] if args.lr_schedule != 'constant' else [])
    for name in names:
        if name in flags and flags[name] != getattr(args, name):
            print(f"note: --{name.replace('_', '-')} is {getattr(args, name)} now, "
                  f'{flags[name]} in the run being resumed')


def _example_names(dataset, indices):
    """Return the image names (e.g. 2007_000032) of dataset examples."""
    return [os.path.splitext(os.path.basename(dataset.examples[i][0]))[0]
            for i in indices]


def _read_seen(worker_dir, epochs):
    """Return the first `epochs` epochs of a worker's examples.json, or {}."""
    try:
        with open(os.path.join(worker_dir, FILES['examples'])) as f:
            seen = json.load(f)
        return {k: v for k, v in seen.items() if int(k) <= epochs}
    except (OSError, ValueError, AttributeError):
        return {}


def _save_predictions(folder, net, dataset, devices, n=4):
    """Draw D2L's grid: n validation crops, predicted label maps, ground truth."""
    from .plotting import plot_predictions
    from .voc import RGB_MEAN, RGB_STD
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    X = nd.stack(*[x for x, _ in items]).as_in_context(devices[0])  # (n, 3, h, w)
    preds = net(X).argmax(axis=1).asnumpy().astype(np.uint8)         # (n, h, w)
    imgs = [np.clip(x.asnumpy().transpose(1, 2, 0) * RGB_STD + RGB_MEAN, 0, 1)
            for x, _ in items]                                         # (h, w, 3)
    labels = [y.asnumpy().astype(np.uint8) for _, y in items]          # (h, w)
    folder.write_figure('predictions', plot_predictions(imgs, preds, labels))


class _Run:
    """One call of `fit`: what the epoch-end hook needs, in one place."""

    def __init__(self, args, devices, folder, state, workers, train_set, batches):
        self.args, self.devices, self.folder, self.workers = args, devices, folder, workers
        self.rank = workers.rank if workers else 0
        self.worker_dir = (os.path.join(args.out_dir, f'worker-{self.rank}')
                           if workers else None)
        self.train_set, self.batches = train_set, batches
        self.history = list(state['history']) if state else []
        self.best = (dict(miou=state['best_miou'], epoch=state['best_epoch'])
                     if state else dict(miou=-1.0, epoch=0))
        self.run_id = (state or {}).get('run_id') or new_run_id()
        self.start = state['epoch'] if state else 0
        self.seen = _read_seen(self.worker_dir, self.start) if workers and state else {}
        self.baseline = None

    def saved_args(self, voc_dir):
        return dict(vars(self.args), devices=[str(d) for d in self.devices],
                    voc_dir=voc_dir, dist_workers=self.workers.num_workers
                    if self.workers else 1)

    def on_epoch_end(self, net, trainer, record, voc_dir):
        """Save the epoch: the worker's own files, then (rank 0) the run folder."""
        from .plotting import plot_training_curves
        self.history.append(record)
        score = _best_score(record)
        is_best = score > self.best['miou']  # False for NaN
        if is_best:
            self.best.update(miou=score, epoch=record['epoch'])
        if self.workers:
            self.seen[str(record['epoch'])] = _example_names(self.train_set,
                                                             self.batches.served)
            with interrupts_deferred():
                os.makedirs(self.worker_dir, exist_ok=True)
                with atomic_path(os.path.join(self.worker_dir, FILES['last'])) as tmp:
                    net.save_parameters(tmp)
                with atomic_path(os.path.join(self.worker_dir, FILES['examples'])) as tmp:
                    with open(tmp, 'w') as f:
                        json.dump(self.seen, f)
        if self.rank != 0:
            return
        state = dict(epoch=record['epoch'], best_miou=self.best['miou'],
                     best_epoch=self.best['epoch'], baseline=self.baseline,
                     arch=self.args.arch, run_id=self.run_id)
        try:
            with interrupts_deferred():
                self.folder.save_epoch(net, trainer, state, self.history,
                                       self.saved_args(voc_dir), is_best)
            self.folder.write_figure('curves', plot_training_curves(self.history))
        except (OSError, mx.base.MXNetError) as e:
            kept = (f"the checkpoint of epoch {record['epoch'] - 1} is kept; make room "
                    'and continue with --resume' if record['epoch'] > 1
                    else 'no checkpoint was written')
            raise UserError(f"cannot save epoch {record['epoch']} into "
                            f'{self.args.out_dir} ({_why(e)}); {kept}') from None


def _why(e):
    """Say in a few words why a write failed."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e)
    # MXNet reports a full disk as an incomplete write, without errno.
    return 'the disk is full or the write failed' if 'Write' in text else text[:100]


def _best_score(record):
    """Return the score that picks best.params: whole-image mIoU, else crop mIoU."""
    return record.get('whole_miou', record['test_miou'])


def _exit_line(e):
    """Return what run_cli would print for `e`, and its exit code."""
    if isinstance(e, UserError):
        return f'error: {e}', 2
    return ('terminated', 143) if isinstance(e, Terminated) else ('interrupted', 130)


def _print_whole(scores):
    print(f"  whole images: pixel acc {scores['whole_acc']:.3f}, mean acc "
          f"{scores['whole_mean_acc']:.3f}, mIoU {scores['whole_miou']:.3f}, "
          f"fw IoU {scores['whole_fw_iou']:.3f}", flush=True)


def fit(args, devices=None, progress=None):
    """Train the FCN `args` describes (see `recipe`) into the run folder `args.out_dir`.

    Returns the list of epoch records. Each epoch is saved so that whatever
    stops the process, `args.out_dir` holds one complete, resumable epoch;
    `args.resume` continues from it. `progress(iterable, epoch)` may wrap
    each epoch's batches (a progress bar). Explained in chapters/training-at-scale.md.
    """
    devices = devices or devices_of(args)
    _check_devices(args, devices)
    distributed.check_kvstore_env(args.kvstore)
    folder = RunFolder(args.out_dir)
    if not args.kvstore.startswith('dist'):
        folder.lock()
    try:
        return _fit(args, devices, progress, folder)
    finally:
        folder.unlock()


def _fit(args, devices, progress, folder):
    state = folder.read_state() if args.resume else None
    if state is not None:
        _check_resume(args, state)
    voc_dir = _voc_dir(args)
    train_set, test_set, whole_set = _datasets(args, voc_dir)
    # A distributed worker joins the others here. From now on, every worker
    # must run the same steps: an error on one alone would leave the rest waiting.
    workers = distributed.join_workers(args.kvstore)
    rank, num_parts = (workers.rank, workers.num_workers) if workers else (0, 1)
    if workers and rank == 0:
        folder.num_workers = num_parts
        folder.lock()
    train_iter, test_iter = voc_loaders(train_set, test_set, args.batch_size,
                                        args.num_workers, num_parts, rank)
    if num_parts > 1:
        whole_set = whole_set.shard(num_parts, rank)
    num_classes = len(VOC_CLASSES)
    net = _fcn(args, devices, num_classes)
    trainer = _trainer(args, net, workers)
    if state is not None:
        params, states = folder.checkpoint_files(state)
        net.load_parameters(params, ctx=devices)
        trainer.load_states(states)
        print(f"resuming {args.out_dir} after epoch {state['epoch']}")
    if workers:
        h, w = args.crop_size
        workers.share_parameters(net, trainer, nd.zeros((1, 3, h, w), ctx=devices[0]))
    # The training graph: network, loss and pixel counts in one cached graph.
    loss = LossAndAccuracy(net, SegmentationLoss())
    if not args.no_hybridize:
        hybridize_for_training(loss, len(devices))
        # The network alone evaluates crops and whole images (a new shape
        # each): no static memory. The training graph keeps its own.
        net.hybridize()
    run = _Run(args, devices, folder, state, workers, train_set, train_iter.batch_sampler)
    reduce = workers.sum_counts if workers else None
    base = background_baseline(test_iter, num_classes, reduce)
    whole_base = background_baseline(((None, y.expand_dims(0)) for _, y in whole_set),
                                     num_classes, reduce)
    run.baseline = dict(base, whole_miou=whole_base['mean_iou'],
                        whole_acc=whole_base['pixel_acc'])
    print(f"all-background baseline: test acc {base['pixel_acc']:.3f}, test mIoU "
          f"{base['mean_iou']:.3f}; whole images: pixel acc "
          f"{whole_base['pixel_acc']:.3f}, mIoU {whole_base['mean_iou']:.3f}")

    num_batches = len(train_iter)

    def lr_fn(step):
        return lr_at(step, args.num_epochs * num_batches, args.lr, args.lr_schedule,
                     round(args.warmup_epochs * num_batches))

    def evaluate_whole(net):
        scores = evaluate_whole_images(net, whole_set, devices, num_classes, reduce)
        scores = {'whole_' + ('acc' if k == 'pixel_acc' else k.replace('mean_iou', 'miou')): v
                  for k, v in scores.items()}
        _print_whole(scores)
        return scores

    # Each worker shuffles and crops its shard with its own random stream;
    # rank 0's is the single-machine run's.
    seed = args.seed if rank == 0 else \
        int(np.random.SeedSequence([args.seed, rank]).generate_state(1)[0])
    try:
        history = train_ch13(
            net, train_iter, test_iter, loss, trainer, args.num_epochs,
            devices, num_classes=num_classes, start_epoch=run.start, seed=seed,
            lr_fn=lr_fn, progress=progress, reduce=reduce,
            on_epoch_trained=workers.average_aux if workers else None,
            evaluate_f=evaluate_whole,
            on_epoch_end=lambda record: run.on_epoch_end(net, trainer, record, voc_dir))
    except TrainingDiverged as e:
        kept = (f"the checkpoint of epoch {run.history[-1]['epoch']} in {args.out_dir} "
                'is kept' if run.history else 'no checkpoint was written')
        message = f'{e}; {kept}; try a smaller --lr'
        if workers:  # other workers may notice a step later, or never
            distributed.abandon(f'error: {message}', 2)
        raise TrainingDiverged(message) from None
    except (UserError, KeyboardInterrupt, Terminated) as e:
        if workers:  # MXNet's orderly exit would wait for the others forever
            distributed.abandon(*_exit_line(e))
        raise
    if rank == 0:
        _save_predictions(folder, net, test_set, devices)
    print(f"best whole-image mIoU {run.best['miou']:.3f} (epoch {run.best['epoch']}, "
          f"baseline {whole_base['mean_iou']:.3f}); saved in {args.out_dir}")
    return run.history
