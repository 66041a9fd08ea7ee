"""Measure FCN training speed on this machine against its matmul peak.

Reports, in one run:
  * the float32 matmul peak (nd.dot and oneDNN FullyConnected on square matrices),
  * training throughput of get_fcn at 320x480 (images/s) and the GFLOP/s it
    achieves, FLOPs counted analytically by walking the network,
  * the training loop's overhead over a bare forward/backward/step loop on the
    same network, the two measured alternately so machine noise hits both.

`--sweep` reruns itself in subprocesses under several MXNet/OpenMP thread
settings and prints one table. Thread settings must be in the environment
before MXnet starts, hence subprocesses.

    /root/v/bin/python benchmarks/bench_train.py              # one setting
    /root/v/bin/python benchmarks/bench_train.py --sweep      # compare settings

Timings on a shared machine are noisy: rerun, and compare ratios measured in
the same run rather than absolute numbers across runs.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

ENV_KEYS = ('OMP_NUM_THREADS', 'MXNET_CPU_WORKER_NTHREADS', 'MXNET_ENGINE_TYPE',
            'OMP_PROC_BIND', 'OMP_PLACES', 'OMP_WAIT_POLICY')

# A setting is a name, the environment it runs under, and extra arguments.
SWEEP = [
    ('OMP=2 (base)', {'OMP_NUM_THREADS': '2'}),
    ('OMP=1', {'OMP_NUM_THREADS': '1'}),
    ('OMP unset', {'OMP_NUM_THREADS': None}),
    ('OMP=2 bind=close', {'OMP_NUM_THREADS': '2', 'OMP_PROC_BIND': 'close',
                          'OMP_PLACES': 'cores'}),
    ('OMP=2 wait=passive', {'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'passive'}),
    ('OMP=1 workers=2', {'OMP_NUM_THREADS': '1', 'MXNET_CPU_WORKER_NTHREADS': '2'}),
    ('OMP=2 NaiveEngine', {'OMP_NUM_THREADS': '2', 'MXNET_ENGINE_TYPE': 'NaiveEngine'}),
    ('OMP=2 hybridize plain', {'OMP_NUM_THREADS': '2'}, ['--hybridize', 'plain']),
    ('OMP=2 not hybridized', {'OMP_NUM_THREADS': '2'}, ['--hybridize', 'none']),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--batch-size', type=int, default=8,
                   help='images per step (the book uses 32; 8 keeps a 2-core run short)')
    p.add_argument('--size', type=int, nargs=2, default=[320, 480], metavar=('H', 'W'),
                   help='input height and width (multiples of 32)')
    p.add_argument('--num-classes', type=int, default=21, help='output classes')
    p.add_argument('--rounds', type=int, default=3,
                   help='timed rounds; each runs --steps bare steps then --steps loop steps')
    p.add_argument('--steps', type=int, default=1, help='steps per loop per round')
    p.add_argument('--matmul-size', type=int, default=4096, help='n of the n x n matmul')
    p.add_argument('--hybridize', choices=['static', 'plain', 'none'], default='static',
                   help='static = hybridize(static_alloc=True, static_shape=True)')
    p.add_argument('--sweep', action='store_true',
                   help='run every thread setting in a subprocess and print a table')
    p.add_argument('--loss', choices=['library', 'channels-last'], default='library',
                   help="library = d2lfcn.train's loss; channels-last = the same "
                        'loss computed after a transpose (faster on CPU)')
    p.add_argument('--profile', action='store_true',
                   help='also print the most expensive operators of one loop step')
    p.add_argument('--json', action='store_true', help='print one JSON line (for --sweep)')
    return p.parse_args(argv)


# ---------------------------------------------------------------- FLOP count

def count_macs(net, shape):
    """Return {layer kind: multiply-adds} of one forward pass on `shape`.

    Walks the leaf blocks with forward hooks and counts from the shapes they
    actually see: Conv2D out.size * Cin/g * kh * kw, Conv2DTranspose
    in.size * Cout/g * kh * kw, Dense out.size * in_units, BatchNorm one
    multiply-add per element. ReLU and max pooling do no multiply-adds.
    """
    from mxnet import nd
    from mxnet.gluon import nn
    macs, handles = {}, []

    def hook(block, inputs, output):
        x = inputs[0]
        if isinstance(block, nn.Conv2DTranspose):
            w = block.weight.shape  # (in, out / groups, kh, kw)
            kind, n = 'deconv', x.size * w[1] * w[2] * w[3]
        elif isinstance(block, nn.Conv2D):
            w = block.weight.shape  # (out, in / groups, kh, kw)
            kind, n = 'conv', output.size * w[1] * w[2] * w[3]
        elif isinstance(block, nn.Dense):
            kind, n = 'dense', output.size * block.weight.shape[1]
        elif isinstance(block, nn.BatchNorm):
            kind, n = 'batchnorm', x.size
        else:
            kind, n = type(block).__name__.lower(), 0
        macs[kind] = macs.get(kind, 0) + n

    def attach(block):
        if not block._children:
            handles.append(block.register_forward_hook(hook))

    net.apply(attach)
    net(nd.zeros(shape)).wait_to_read()
    for h in handles:
        h.detach()
    return macs


# ------------------------------------------------------------- matmul peak

def matmul_peak(n, repeats=3):
    """Return the best GFLOP/s of nd.dot and oneDNN FullyConnected on n x n."""
    from mxnet import nd
    a, b = nd.random.uniform(shape=(n, n)), nd.random.uniform(shape=(n, n))
    ops = {'dot': lambda: nd.dot(a, b),
           'fc': lambda: nd.FullyConnected(a, b, num_hidden=n, no_bias=True)}
    best = {}
    for name, op in ops.items():
        op().wait_to_read()
        times = []
        for _ in range(repeats):
            tic = time.perf_counter()
            op().wait_to_read()
            times.append(time.perf_counter() - tic)
        best[name] = 2 * n ** 3 / min(times) / 1e9
    return best


# ------------------------------------------------------------- the two loops

def masked_loss(pred, label, ignore_label=255):
    """Per-image softmax cross-entropy over non-void pixels (fallback loss)."""
    from mxnet import nd
    valid = label != ignore_label                                  # (batch, H, W)
    logp = nd.log_softmax(pred, axis=1)                            # (batch, C, H, W)
    nll = -nd.pick(logp, label * valid, axis=1) * valid            # (batch, H, W)
    return nll.sum(axis=0, exclude=True) / nd.maximum(valid.sum(axis=0, exclude=True), 1)


def bare_step(net, loss, trainer, X, y):
    """One forward/backward/update on data already on the device, nothing else."""
    from mxnet import autograd
    with autograd.record():
        l = loss(net(X), y)
    l.backward()
    trainer.step(X.shape[0])


def train_batch(net, X, y, loss, trainer, devices):
    """Train one batch as D2L's train_batch_ch13 does; return lazy metric sums.

    Stand-in with d2lfcn.train.train_batch's signature, used when that is
    missing: (loss sum, correct pixels, labelled pixels) stay NDArrays, so the
    engine never waits for Python between batches.
    """
    from mxnet import autograd, gluon, nd
    X_shards = gluon.utils.split_and_load(X, devices)
    y_shards = gluon.utils.split_and_load(y, devices)
    with autograd.record():
        preds = [net(X_shard) for X_shard in X_shards]
        ls = [loss(p, t) for p, t in zip(preds, y_shards)]
    for l in ls:
        l.backward()
    trainer.step(X.shape[0])
    sums = [nd.stack(l.sum(), ((p.argmax(axis=1) == t) * (t != 255)).sum(),
                     (t != 255).sum()) for l, p, t in zip(ls, preds, y_shards)]
    return tuple(nd.add_n(*[s.as_in_context(devices[0]) for s in sums]))


def channels_last_loss(pred, label, ignore_label=255):
    """masked_loss with the softmax over the last axis (after a transpose).

    MXNet's CPU log_softmax over axis 1 of (batch, C, H, W) runs on one thread
    with strided reads; transposing to (batch, H, W, C) first is 2-3x faster.
    """
    from mxnet import nd
    valid = label != ignore_label                                  # (batch, H, W)
    logp = nd.log_softmax(nd.transpose(pred, (0, 2, 3, 1)), axis=-1)  # (batch, H, W, C)
    nll = -nd.pick(logp, label * valid, axis=-1) * valid           # (batch, H, W)
    return nll.sum(axis=0, exclude=True) / nd.maximum(valid.sum(axis=0, exclude=True), 1)


def training_loop_parts(loss_name):
    """Return (description, train_batch, loss) of the loop d2lfcn trains with."""
    try:
        from d2lfcn.train import SegmentationLoss, train_batch as library_batch
        name, batch_fn, loss = 'd2lfcn.train.train_batch', library_batch, SegmentationLoss()
    except ImportError:
        name, batch_fn = 'benchmark stand-in (d2lfcn.train not available)', train_batch
        loss = masked_loss
    if loss_name == 'channels-last':
        return name + ' + channels_last_loss', batch_fn, channels_last_loss
    return name + ' + its loss', batch_fn, loss


class CpuClock:
    """Measure wall time and this process's CPU time (how many cores it got)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def profile_step(step, top=12):
    """Print the operators that take the most time in one call of `step`."""
    from mxnet import nd, profiler
    profiler.set_config(profile_all=True, aggregate_stats=True,
                        filename=os.devnull)
    profiler.set_state('run')
    step()
    nd.waitall()
    profiler.set_state('stop')
    table = profiler.dumps(reset=True, format='json')
    ops = json.loads(table).get('Time', {}).get('operator', {})
    total = sum(v['Total'] for v in ops.values())
    print(f'operators in one loop step ({total / 1e3:.2f} s, summed over threads):')
    for name, v in sorted(ops.items(), key=lambda kv: -kv[1]['Total'])[:top]:
        short = name if len(name) < 60 else name[:57] + '...'
        print(f"  {v['Total'] / total:5.1%} {v['Total'] / 1e3:7.3f} s  {short}")


def run(args):
    """Measure one setting in this process; return a dict of results."""
    import mxnet as mx
    from mxnet import gluon, nd
    from d2lfcn.model import get_fcn

    mx.random.seed(0)
    ctx = mx.cpu()
    h, w = args.size
    shape = (args.batch_size, 3, h, w)
    peaks = [matmul_peak(args.matmul_size)]

    net = get_fcn(args.num_classes, pretrained_base=False, ctx=ctx)
    macs = count_macs(net, (1, 3, h, w))
    fwd_flops = 2 * sum(macs.values())       # per image
    train_flops = 3 * fwd_flops              # backward counted as 2x forward
    if args.hybridize != 'none':
        net.hybridize(static_alloc=args.hybridize == 'static',
                      static_shape=args.hybridize == 'static')
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1, 'wd': 1e-3})
    loop_name, batch_fn, loss = training_loop_parts(args.loss)

    # The bare loop's data already lives on the device; the training loop gets
    # its batch as a DataLoader hands it over (a fresh CPU array each time).
    X = nd.random.uniform(shape=shape, ctx=ctx)
    y = nd.random.randint(0, args.num_classes, shape=shape[:1] + shape[2:],
                          ctx=ctx).astype('float32')
    y[:, :8] = 255  # a void band, so the loss's masking does real work

    def bare():
        bare_step(net, loss, trainer, X, y)

    def loop():
        return batch_fn(net, X.copy(), y.copy(), loss, trainer, [ctx])

    for fn in (bare, loop):  # warm-up: hybridize, allocate, create oneDNN primitives
        fn()
        nd.waitall()
    times = {'bare': [], 'loop': []}
    sums = None
    # Alternate the two loops so a neighbour's burst of load hits both.
    for _ in range(args.rounds):
        for name, fn in (('bare', bare), ('loop', loop)):
            for _ in range(args.steps):
                with CpuClock() as clock:
                    out = fn()
                    nd.waitall()
                times[name].append(clock)
                if out is not None:
                    sums = out if sums is None else [a + b for a, b in zip(sums, out)]
    loss_sum = float(sums[0].asscalar())  # the one synchronisation of the lazy sums
    if args.profile:
        profile_step(loop)
    peaks.append(matmul_peak(args.matmul_size))
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}

    def median(values):
        return sorted(values)[len(values) // 2]

    result = {
        'batch_size': args.batch_size, 'size': [h, w], 'hybridize': args.hybridize,
        'peak_gflops': peak, 'macs_per_image': macs,
        'train_gflop_per_image': train_flops / 1e9,
        'loop': loop_name, 'loss_finite': math.isfinite(loss_sum),
        'env': {k: os.environ.get(k) for k in ENV_KEYS},
    }
    for name, clocks in times.items():
        step_s = median([c.wall for c in clocks])  # medians resist a neighbour's burst
        result.update({
            f'{name}_step_s': step_s,
            f'{name}_images_per_s': args.batch_size / step_s,
            f'{name}_gflops': train_flops * args.batch_size / step_s / 1e9,
            f'{name}_cores_used': sum(c.cpu for c in clocks) / sum(c.wall for c in clocks),
        })
    result['loop_overhead'] = result['loop_step_s'] / result['bare_step_s'] - 1
    return result


def report(r):
    peak = max(r['peak_gflops'].values())
    print(f"matmul peak: nd.dot {r['peak_gflops']['dot']:.1f} GFLOP/s, "
          f"FullyConnected (oneDNN) {r['peak_gflops']['fc']:.1f} GFLOP/s -> peak {peak:.1f}")
    macs = r['macs_per_image']
    print('forward multiply-adds per image: ' + ', '.join(
        f'{k} {v / 1e9:.3f} G' for k, v in sorted(macs.items()) if v))
    print(f"training FLOPs per image (2 x MACs x 3): {r['train_gflop_per_image']:.1f} GFLOP")
    print(f"batch {r['batch_size']} at {r['size'][0]}x{r['size'][1]}, "
          f"hybridize={r['hybridize']}")
    for name in ('bare', 'loop'):
        print(f"{name:>4} step {r[name + '_step_s']:.2f} s: "
              f"{r[name + '_images_per_s']:.3f} images/s "
              f"({1 / r[name + '_images_per_s']:.2f} s/image), "
              f"{r[name + '_gflops']:.1f} GFLOP/s = {r[name + '_gflops'] / peak:.0%} of peak, "
              f"{r[name + '_cores_used']:.2f} cores busy")
    print(f"train loop ({r['loop']}): overhead {r['loop_overhead']:+.1%} over the bare loop")
    if not r['loss_finite']:
        print('warning: the loss became NaN or infinite during the run')
    threads = int(r['env']['OMP_NUM_THREADS'] or os.cpu_count())
    if r['bare_cores_used'] < 0.9 * min(threads, os.cpu_count()):
        print(f"note: the steps kept {r['bare_cores_used']:.2f} cores busy, fewer than the "
              f"{min(threads, os.cpu_count())} they could use: the machine is shared, "
              f"compare ratios within one run")


def sweep(args, argv):
    """Run every SWEEP setting in a subprocess; print one comparison table."""
    rows = []
    base_argv = [a for a in argv if a != '--sweep']
    for item in SWEEP:
        name, env_changes = item[0], item[1]
        extra = item[2] if len(item) > 2 else []
        env = dict(os.environ)
        for k in ENV_KEYS:
            env.pop(k, None)
        for k, v in env_changes.items():
            if v is not None:
                env[k] = v
        cmd = [sys.executable, os.path.abspath(__file__), '--json'] + base_argv + extra
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(f'{name}: failed\n{out.stderr[-2000:]}', file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append((name, r))
        peak = max(r['peak_gflops'].values())
        print(f"{name:<24} peak {peak:6.1f}  bare {r['bare_images_per_s']:.3f} img/s "
              f"{r['bare_gflops']:6.1f} GFLOP/s ({r['bare_gflops'] / peak:4.0%})  "
              f"loop {r['loop_images_per_s']:.3f} img/s ({r['loop_overhead']:+.1%})",
              flush=True)
    if rows:
        best_name, best = max(rows, key=lambda nr: nr[1]['loop_images_per_s'])
        machine_peak = max(max(r['peak_gflops'].values()) for _, r in rows)
        print(f'\nfastest training loop: {best_name}, '
              f"{best['loop_images_per_s']:.3f} images/s, {best['loop_gflops']:.1f} GFLOP/s = "
              f"{best['loop_gflops'] / machine_peak:.0%} of the best matmul peak of the run "
              f'({machine_peak:.1f} GFLOP/s)')


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.sweep:
        sweep(args, argv)
        return
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        report(r)


if __name__ == '__main__':
    main()
