"""Compare d2lfcn's VOC loader with a D2L-style eager float32 loader.

Reports, side by side in one run, on a generated full-size VOC-like tree
(1464 train + 1449 val JPEG/PNG pairs, mostly 500x375 like VOC2012):

  * loader throughput (images/s over one training epoch, batch 32, crop 320x480),
  * peak memory while building train + val datasets and iterating that epoch,
  * how many images/s a training step of D2L's FCN (ResNet-18 v2 features,
    1x1 conv, 64x64 stride-32 transposed conv) consumes at 320x480,

and checks the targets: d2lfcn's peak memory <= 1/3 of the eager loader's, and
its throughput >= 10x the training step's consumption.

Each measurement runs in its own subprocess. Peak memory is the child's
ru_maxrss from wait4 (peak RSS of the largest single process; the targets use
the num_workers=0 rows, which are single processes) and, to count worker
processes too, the peak proportional set size (PSS) of the child's process
tree sampled every 50 ms (PSS shares library pages with every other process
mapping them, so it reads lower than RSS on a busy machine).

    python benchmarks/bench_loader.py            # full run (a few minutes)
    python benchmarks/bench_loader.py --quick    # small smoke run

Timings on a shared machine are noisy; compare the ratios of one run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# VOC2012's common sizes as (height, width); with crop 320x480 about 75% of
# images are kept, close to D2L's 1114 of 1464.
VOC_LIKE_SIZES = [(375, 500)] * 11 + [(333, 500)] * 4 + [(500, 333)] * 2 + \
                 [(500, 375)] * 2 + [(281, 500)]


def _pss_kb(pid):
    """Return the PSS of `pid` in kB (0 if it is gone)."""
    try:
        with open(f'/proc/{pid}/smaps_rollup') as f:
            for line in f:
                if line.startswith('Pss:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid):
    """Return `pid` and all its descendants' pids."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f'/proc/{p}/task/{p}/children') as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def run_child(args):
    """Run this script as a child; return (its JSON result, peak PSS MB, ru_maxrss MB)."""
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    while True:
        peak = max(peak, sum(_pss_kb(p) for p in _descendants(proc.pid)))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read()
    proc.stdout.close()
    if proc.returncode != 0:
        raise SystemExit(f'child {args} failed with exit code {proc.returncode}')
    lines = out.strip().splitlines()
    for line in lines[:-1]:  # e.g. the loaders' `read N examples`
        print(f'  [{args[1]}] {line}')
    return json.loads(lines[-1]), peak / 1024, usage.ru_maxrss / 1024


# --- children ---------------------------------------------------------------

def child_baseline():
    """Import MXNet and d2lfcn only: the memory floor of every loader."""
    import d2lfcn  # noqa: F401
    import mxnet as mx
    mx.nd.ones((1,)).asnumpy()
    return {}


def _epoch(train_iter):
    """Iterate one epoch; return (images, seconds)."""
    import mxnet as mx
    start, n = time.time(), 0
    for X, Y in train_iter:
        X.wait_to_read()
        Y.wait_to_read()
        n += X.shape[0]
    mx.nd.waitall()
    return n, time.time() - start


def child_d2lfcn(voc_dir, batch_size, crop, num_workers):
    """Build d2lfcn's train and test loaders, then iterate one training epoch."""
    import d2lfcn
    start = time.time()
    train_iter, test_iter = d2lfcn.load_data_voc(batch_size, crop, voc_dir,
                                                 num_workers=num_workers)
    build = time.time() - start
    n, seconds = _epoch(train_iter)
    return {'build_s': build, 'epoch_s': seconds, 'images': n}


def child_eager(voc_dir, batch_size, crop, num_workers):
    """Build a D2L-style eager loader (everything decoded up front), iterate one epoch."""
    import d2lfcn  # first: it sets threads and numpy's aliases before MXNet starts
    import mxnet as mx
    from mxnet import gluon, image, nd

    # D2L's recipe, written for this benchmark: every image decoded and
    # normalised to float32 at build time; labels kept as RGB colour images.
    def read_images(is_train):
        fname = os.path.join(voc_dir, 'ImageSets', 'Segmentation',
                             'train.txt' if is_train else 'val.txt')
        with open(fname) as f:
            names = f.read().split()
        features = [image.imread(os.path.join(voc_dir, 'JPEGImages', n + '.jpg'))
                    for n in names]
        labels = [image.imread(os.path.join(voc_dir, 'SegmentationClass', n + '.png'))
                  for n in names]
        return features, labels

    class EagerVOCSegDataset(gluon.data.Dataset):
        def __init__(self, is_train, crop_size):
            self.rgb_mean = nd.array([0.485, 0.456, 0.406])
            self.rgb_std = nd.array([0.229, 0.224, 0.225])
            self.crop_size = crop_size
            features, labels = read_images(is_train)
            self.features = [self.normalize_image(f) for f in self.filter(features)]
            self.labels = self.filter(labels)
            self.colormap2label = d2lfcn.voc_colormap2label()
            print('read ' + str(len(self.features)) + ' examples')

        def normalize_image(self, img):
            return (img.astype('float32') / 255 - self.rgb_mean) / self.rgb_std

        def filter(self, imgs):
            return [im for im in imgs if im.shape[0] >= self.crop_size[0]
                    and im.shape[1] >= self.crop_size[1]]

        def __getitem__(self, idx):
            feature, rect = image.random_crop(self.features[idx],
                                              (self.crop_size[1], self.crop_size[0]))
            label = image.fixed_crop(self.labels[idx], *rect)
            return (feature.transpose((2, 0, 1)),
                    d2lfcn.voc_label_indices(label, self.colormap2label))

        def __len__(self):
            return len(self.features)

    start = time.time()
    train_iter = gluon.data.DataLoader(EagerVOCSegDataset(True, crop), batch_size,
                                       shuffle=True, last_batch='discard',
                                       num_workers=num_workers)
    test_iter = gluon.data.DataLoader(EagerVOCSegDataset(False, crop), batch_size,
                                      last_batch='discard', num_workers=num_workers)
    mx.nd.waitall()
    build = time.time() - start
    n, seconds = _epoch(train_iter)
    del test_iter
    return {'build_s': build, 'epoch_s': seconds, 'images': n}


def child_train(batch_size, crop, steps):
    """Time forward/backward/SGD steps of D2L's FCN on random data."""
    import d2lfcn  # first: it sets threads and numpy's aliases before MXNet starts
    import mxnet as mx
    from mxnet import autograd, gluon, nd
    net = d2lfcn.get_fcn(21, pretrained_base=False)
    net.hybridize()
    loss = gluon.loss.SoftmaxCrossEntropyLoss(axis=1)
    trainer = gluon.Trainer(net.collect_params(), 'sgd',
                            {'learning_rate': 0.1, 'wd': 1e-3})
    X = nd.random.normal(shape=(batch_size, 3) + tuple(crop))
    Y = nd.random.randint(0, 21, shape=(batch_size,) + tuple(crop)).astype('float32')

    def step():
        with autograd.record():
            l = loss(net(X), Y)
        l.backward()
        trainer.step(batch_size)
        l.mean().asscalar()
    step()  # warm-up: memory planning, oneDNN kernel choice
    start = time.time()
    for _ in range(steps):
        step()
    seconds = time.time() - start
    return {'images': steps * batch_size, 'seconds': seconds}


# --- parent -----------------------------------------------------------------

def make_tree(root, quick):
    """Generate (or reuse) the VOC-like tree under `root`; return its VOC2012 folder."""
    import d2lfcn
    n_train, n_val = (48, 48) if quick else (1464, 1449)
    start = time.time()
    voc_dir = d2lfcn.make_synthetic_voc(root, num_train=n_train, num_val=n_val,
                                        sizes=VOC_LIKE_SIZES, void_radius=2, seed=0)
    print(f'VOC-like tree: {n_train} train + {n_val} val at {voc_dir} '
          f'({time.time() - start:.0f} s to generate or reuse)')
    return voc_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', help='folder for the generated tree (default: a temp dir, '
                        'deleted afterwards)')
    parser.add_argument('--quick', action='store_true', help='small smoke run')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--crop', type=int, nargs=2, default=[320, 480],
                        metavar=('H', 'W'))
    parser.add_argument('--workers', type=int, nargs='+', default=None,
                        help='num_workers settings to run the d2lfcn loader with '
                        '(default: its own default, and 2)')
    parser.add_argument('--train-batch-size', type=int, default=None,
                        help='batch of the timed training step (default 8; 2 with --quick)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    parser.add_argument('--voc-dir', help=argparse.SUPPRESS)
    parser.add_argument('--num-workers', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--steps', type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    crop = tuple(args.crop)

    if args.child:
        result = {'baseline': lambda: child_baseline(),
                  'd2lfcn': lambda: child_d2lfcn(args.voc_dir, args.batch_size, crop,
                                                 args.num_workers),
                  'eager': lambda: child_eager(args.voc_dir, args.batch_size, crop,
                                               args.num_workers),
                  'train': lambda: child_train(args.batch_size, crop, args.steps),
                  }[args.child]()
        print(json.dumps(result))
        return

    import d2lfcn
    with tempfile.TemporaryDirectory(prefix='bench-voc-') as tmp:
        voc_dir = make_tree(args.root or tmp, args.quick)
        default_workers = d2lfcn.get_dataloader_workers()
        workers = args.workers or sorted({default_workers, 2})
        common = ['--voc-dir', voc_dir, '--batch-size', str(args.batch_size),
                  '--crop', str(crop[0]), str(crop[1])]
        print(f'load average before: {os.getloadavg()[0]:.2f} '
              f'(this machine may be shared; timings are noisy)')
        _, base_mb, base_rss = run_child(['--child', 'baseline'])
        rows = []
        for nw in workers:
            res, mb, rss = run_child(['--child', 'd2lfcn', '--num-workers', str(nw)] + common)
            rows.append((f'd2lfcn (num_workers={nw})', res, mb, rss))
        res, mb, rss = run_child(['--child', 'eager', '--num-workers', str(default_workers)]
                                 + common)
        rows.append((f'D2L-style eager float32 (num_workers={default_workers})', res, mb, rss))
        tb = args.train_batch_size or (2 if args.quick else 8)
        train, _, _ = run_child(['--child', 'train', '--batch-size', str(tb),
                              '--crop', str(crop[0]), str(crop[1]),
                              '--steps', '1' if args.quick else '3'])
        load_after = os.getloadavg()[0]

    print(f'\nbatch {args.batch_size}, crop {crop[0]}x{crop[1]}, one training epoch; '
          'memory while building train + val and iterating the epoch')
    print(f'{"loader":44s} {"build s":>8s} {"epoch s":>8s} {"images/s":>9s} '
          f'{"maxrss MB":>10s} {"tree PSS MB":>12s}')
    for name, res, mb, rss in rows:
        rate = res['images'] / res['epoch_s']
        print(f'{name:44s} {res["build_s"]:8.1f} {res["epoch_s"]:8.1f} {rate:9.1f} '
              f'{rss:10.0f} {mb:12.0f}')
    print(f'{"(import mxnet + d2lfcn only)":44s} {"":8s} {"":8s} {"":9s} '
          f'{base_rss:10.0f} {base_mb:12.0f}')
    train_rate = train['images'] / train['seconds']
    print(f'\ntraining step (FCN ResNet-18 v2, SGD, batch {tb}, {crop[0]}x{crop[1]}, '
          f'random init): {train_rate:.2f} images/s')

    ours = rows[0]
    mem_ratio = ours[3] / rows[-1][3]  # ru_maxrss, both single-process rows
    speed_ratio = ours[1]['images'] / ours[1]['epoch_s'] / train_rate
    print(f'\ntargets, {ours[0]}:')
    print(f'  peak RSS / eager peak RSS = {mem_ratio:.3f}  (target <= 0.333) '
          f'{"OK" if mem_ratio <= 1 / 3 else "MISSED"}')
    print(f'  throughput / training   = {speed_ratio:.1f}x  (target >= 10x) '
          f'{"OK" if speed_ratio >= 10 else "MISSED"}')
    print(f'load average after: {load_after:.2f}')


if __name__ == '__main__':
    main()
