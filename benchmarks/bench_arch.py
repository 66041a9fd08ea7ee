"""Compare FCN-32s, FCN-16s and FCN-8s trained equally long on the embedded dataset.

Each architecture is trained by the real command, in its own process, with
the demo recipe (same data, epochs, seed):

    python -m d2lfcn.train --demo --arch ARCH --out-dir OUT/ARCH [--num-epochs N]

then its last checkpoint (not the best epoch: equal training) segments every
validation image whole (`predict_image`, mode 'pad') and one table reports, side by
side:

  * pixel accuracy and mean IoU (the FCN paper's definitions, void excluded),
  * boundary accuracy: pixel accuracy on the pixels within RADIUS pixels
    (default 3, Euclidean) of a label edge, void excluded; an edge is where two
    4-neighbours carry different labels, void counting as a label, so object
    outlines next to VOC's void band are edges,
  * interior accuracy on the remaining non-void pixels, the parameter count,
    and the fastest epoch's training time (each run's metrics.csv has all).

    python benchmarks/bench_arch.py            # full run (~10-15 min, 2 cores)
    python benchmarks/bench_arch.py --quick    # 1 epoch, 20 images: a smoke run

One seed, one run: differences of a point or two are within run-to-run noise.
"""
import argparse
import csv
import os
import subprocess
import sys
import time

import cv2
import numpy as np

ARCHS = ('fcn32s', 'fcn16s', 'fcn8s')
IGNORE = 255


def label_edges(label):
    """Return a bool map of pixels whose 4-neighbour has another label (void included)."""
    edge = np.zeros(label.shape, dtype=bool)
    dy = label[1:, :] != label[:-1, :]
    dx = label[:, 1:] != label[:, :-1]
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    return edge


def boundary_band(label, radius):
    """Return a bool map of non-void pixels within `radius` pixels of a label edge."""
    edge = label_edges(label)
    if not edge.any():
        return np.zeros(label.shape, dtype=bool)
    # distanceTransform measures the distance to the nearest zero pixel.
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2,
                                 cv2.DIST_MASK_PRECISE)
    return (dist <= radius) & (label != IGNORE)


def _val_examples(voc_dir, limit=None):
    """Yield (name, RGB uint8 image, label ids with 255 on void) of val.txt."""
    from d2lfcn.voc import read_voc_label
    with open(os.path.join(voc_dir, 'ImageSets', 'Segmentation', 'val.txt')) as f:
        names = f.read().split()[:limit]
    for name in names:
        bgr = cv2.imread(os.path.join(voc_dir, 'JPEGImages', f'{name}.jpg'))
        label = read_voc_label(os.path.join(voc_dir, 'SegmentationClass', f'{name}.png'))
        yield name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label


def evaluate(net, voc_dir, num_classes, radius, limit=None):
    """Return whole-image scores of `net` on the val split, boundary band included."""
    from d2lfcn.metrics import confusion_matrix, segmentation_scores
    from d2lfcn.inference import predict_image
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    band_hits = band_total = inner_hits = inner_total = 0
    for _, img, label in _val_examples(voc_dir, limit):
        pred = predict_image(net, img)  # (H, W)
        conf += confusion_matrix(pred, label, num_classes, IGNORE)
        band = boundary_band(label, radius)
        inner = ~band & (label != IGNORE)
        correct = pred == label
        band_hits += int(correct[band].sum())
        band_total += int(band.sum())
        inner_hits += int(correct[inner].sum())
        inner_total += int(inner.sum())
    scores = segmentation_scores(conf)
    scores.update(boundary_acc=band_hits / max(band_total, 1),
                  interior_acc=inner_hits / max(inner_total, 1),
                  band_fraction=band_total / max(band_total + inner_total, 1))
    return scores


def train(arch, out_dir, seed, num_epochs):
    """Run the training command for `arch`; return its per-epoch metrics rows."""
    cmd = [sys.executable, '-m', 'd2lfcn.train', '--demo', '--arch', arch,
           '--out-dir', out_dir, '--seed', str(seed)]
    if num_epochs is not None:
        cmd += ['--num-epochs', str(num_epochs)]
    os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir, 'train.log')
    print('$ ' + ' '.join(cmd[1:]) + f'  (log: {log})', flush=True)
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        with open(log) as f:
            tail = f.read().strip().splitlines()[-3:]
        sys.exit(f'training {arch} failed (exit {proc.returncode}):\n' + '\n'.join(tail))
    with open(os.path.join(out_dir, 'metrics.csv')) as f:
        return list(csv.DictReader(f))


def _table(rows, radius):
    head = (f"| arch | params (M) | fastest epoch (s) | pixel acc | mean IoU | "
            f"boundary acc (<= {radius} px) | interior acc |")
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        lines.append(f"| {r['arch']} | {r['params']:.2f} | {r['seconds']:.1f} | "
                     f"{r['pixel_acc']:.3f} | {r['mean_iou']:.3f} | "
                     f"{r['boundary_acc']:.3f} | {r['interior_acc']:.3f} |")
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--archs', nargs='+', choices=ARCHS, default=list(ARCHS),
                   help='architectures to compare (default: all three)')
    p.add_argument('--num-epochs', type=int, default=None,
                   help="epochs per architecture (default: the demo recipe's)")
    p.add_argument('--quick', action='store_true',
                   help='1 epoch and 20 validation images: a smoke run')
    p.add_argument('--radius', type=float, default=3,
                   help='boundary band half-width in pixels (default: 3)')
    p.add_argument('--seed', type=int, default=0, help='training seed (default: 0)')
    p.add_argument('--out-dir', default=os.path.join('runs', 'bench_arch'),
                   help='one training run per arch goes here (default: runs/bench_arch)')
    args = p.parse_args(argv)
    num_epochs = 1 if args.quick and args.num_epochs is None else args.num_epochs
    limit = 20 if args.quick else None

    from d2lfcn.model import load_fcn
    from d2lfcn.synthetic import demo_voc_dir
    voc_dir = demo_voc_dir()
    rows = []
    for arch in args.archs:
        history = train(arch, os.path.join(args.out_dir, arch), args.seed, num_epochs)
        net = load_fcn(os.path.join(args.out_dir, arch, 'last.params'), arch, 21)
        net.hybridize()
        tic = time.time()
        scores = evaluate(net, voc_dir, 21, args.radius, limit)
        params = sum(v.data().size for v in net.collect_params().values()) / 1e6
        rows.append(dict(scores, arch=arch, params=params,
                         # the least disturbed epoch: the machine may be shared
                         seconds=min(float(h['seconds']) for h in history)))
        print(f"{arch}: {len(history)} epochs, test mIoU during training "
              f"{float(history[-1]['test_miou']):.3f}; whole-image eval "
              f"{time.time() - tic:.0f} s", flush=True)
    band = rows[0]['band_fraction']
    print(f'\nembedded demo dataset ({voc_dir}), {len(history)} epoch(s) each, seed '
          f'{args.seed}; whole validation images; boundary band = '
          f'{100 * band:.1f}% of non-void pixels; load average at the end '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine '
          'makes the times noisy)\n')
    print(_table(rows, args.radius))
    print('\nreproduce: python benchmarks/bench_arch.py '
          + ' '.join(argv if argv is not None else sys.argv[1:]))


if __name__ == '__main__':
    main()
