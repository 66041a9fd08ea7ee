"""Measure FCN training speed on this machine against its matmul peak.

Reports, in one run:
  * the float32 matmul peak (nd.dot and oneDNN FullyConnected on n x n),
  * training throughput of get_fcn at 320x480 (images/s) and the GFLOP/s it
    achieves, FLOPs counted analytically by walking the network,
  * the training loop's overhead (d2lfcn.train.train_batch) over a bare
    forward/backward/step loop on the same network, the two run alternately
    so that a neighbour's burst of load hits both.

Every rate is given twice: per wall-clock second (what the targets mean) and
per CPU-second this process got (robust when other jobs share the cores: a
loaded machine stretches wall time, not the work done per CPU-second).

`--sweep` reruns itself in subprocesses under several MXNet/OpenMP thread
settings (they must be in the environment before MXNet starts) and prints
one table.

    python benchmarks/bench_train.py              # one setting
    python benchmarks/bench_train.py --sweep      # compare settings
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

# A setting: its name, the environment it runs under, extra arguments.
SWEEP = [
    ('OMP=2 (base)', {'OMP_NUM_THREADS': '2'}, []),
    ('OMP=1', {'OMP_NUM_THREADS': '1'}, []),
    ('OMP unset', {}, []),
    ('OMP=2 bind=close', {'OMP_NUM_THREADS': '2', 'OMP_PROC_BIND': 'close',
                          'OMP_PLACES': 'cores'}, []),
    ('OMP=2 wait=passive', {'OMP_NUM_THREADS': '2', 'OMP_WAIT_POLICY': 'passive'}, []),
    ('OMP=1 workers=2', {'OMP_NUM_THREADS': '1', 'MXNET_CPU_WORKER_NTHREADS': '2'}, []),
    ('OMP=1 2 CPU devices', {'OMP_NUM_THREADS': '1'}, ['--devices', '2']),
    ('OMP=2 2 CPU devices', {'OMP_NUM_THREADS': '2'}, ['--devices', '2']),
    ('OMP=2 NaiveEngine', {'OMP_NUM_THREADS': '2', 'MXNET_ENGINE_TYPE': 'NaiveEngine'}, []),
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
                   help='timed rounds; each runs --steps bare steps, then --steps loop steps')
    p.add_argument('--steps', type=int, default=1, help='steps per loop per round')
    p.add_argument('--matmul-size', type=int, default=3072, help='n of the n x n matmul')
    p.add_argument('--devices', type=int, default=1,
                   help='train data-parallel on this many CPU contexts (cpu(0), cpu(1), ...)')
    p.add_argument('--hybridize', choices=['static', 'plain', 'none'], default='static',
                   help='static = hybridize(static_alloc=True, static_shape=True)')
    p.add_argument('--profile', action='store_true',
                   help='also print the most expensive operators of one loop step')
    p.add_argument('--sweep', action='store_true',
                   help='run every thread setting in a subprocess and print a table')
    p.add_argument('--repeat', type=int, default=1,
                   help='with --sweep: run the settings round-robin this many times')
    p.add_argument('--json', action='store_true', help='print one JSON line (for --sweep)')
    return p.parse_args(argv)


class CpuClock:
    """Measure wall time and the CPU time of this process (all its threads)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


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

def matmul_peak(n, devices, repeats=2):
    """Return {op: (wall GFLOP/s, GFLOP per CPU-second)} of the best n x n run.

    With several devices each multiplies its own matrices at the same time,
    as data-parallel training would use them.
    """
    from mxnet import nd
    mats = [(nd.random.uniform(shape=(n, n), ctx=d), nd.random.uniform(shape=(n, n), ctx=d))
            for d in devices]
    ops = {'nd.dot': lambda a, b: nd.dot(a, b),
           'FullyConnected': lambda a, b: nd.FullyConnected(a, b, num_hidden=n, no_bias=True)}
    flops, best = 2 * n ** 3 * len(devices), {}
    for name, op in ops.items():
        clocks = []
        for _ in range(repeats + 1):  # the first call is a warm-up
            with CpuClock() as clock:
                outs = [op(a, b) for a, b in mats]
                for out in outs:
                    out.wait_to_read()
            clocks.append(clock)
        best[name] = (flops / min(c.wall for c in clocks[1:]) / 1e9,
                      flops / min(c.cpu for c in clocks[1:]) / 1e9)
    return best


# ------------------------------------------------------------- the two loops

def masked_loss(pred, label, ignore_label=255):
    """Per-image softmax cross-entropy over non-void pixels (fallback loss)."""
    from mxnet import nd
    valid = label != ignore_label                                  # (batch, H, W)
    logp = nd.log_softmax(pred, axis=1)                            # (batch, C, H, W)
    nll = -nd.pick(logp, label * valid, axis=1) * valid            # (batch, H, W)
    return nll.sum(axis=0, exclude=True) / nd.maximum(valid.sum(axis=0, exclude=True), 1)


def bare_step(net, loss, trainer, X_shards, y_shards):
    """One forward/backward/update on data already on the devices, nothing else."""
    from mxnet import autograd
    with autograd.record():
        ls = [loss(net(X), y) for X, y in zip(X_shards, y_shards)]
    for l in ls:
        l.backward()
    trainer.step(sum(X.shape[0] for X in X_shards))


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


def training_loop_parts():
    """Return (description, train_batch, loss) of the loop d2lfcn trains with."""
    try:
        from d2lfcn.train import SegmentationLoss, train_batch as library_batch
    except ImportError:
        return 'benchmark stand-in (d2lfcn.train missing)', train_batch, masked_loss
    return 'd2lfcn.train.train_batch + SegmentationLoss', library_batch, SegmentationLoss()


def profile_step(step, top=12):
    """Print the operators that take the most time in one call of `step`."""
    from mxnet import nd, profiler
    # The profiler replaces its file when it dumps: never point it at /dev/null.
    import tempfile
    trace = os.path.join(tempfile.mkdtemp(prefix='bench_train'), 'profile.json')
    profiler.set_config(profile_all=True, aggregate_stats=True, filename=trace)
    profiler.set_state('run')
    step()
    nd.waitall()
    profiler.set_state('stop')
    ops = json.loads(profiler.dumps(reset=True, format='json'))['Time']['operator']
    total = sum(v['Total'] for v in ops.values())
    print(f'operators of one loop step, {total / 1e3:.2f} s in all '
          '(ops the engine runs as one bulk show as a comma list):')
    for name, v in sorted(ops.items(), key=lambda kv: -kv[1]['Total'])[:top]:
        short = name if len(name) < 60 else name[:57] + '...'
        print(f"  {v['Total'] / total:5.1%} {v['Total'] / 1e3:7.3f} s  {short}")


def run(args):
    """Measure one setting in this process; return a dict of results."""
    import d2lfcn  # noqa: F401  first: it defaults OMP_NUM_THREADS before MXNet starts
    import mxnet as mx
    from mxnet import gluon, nd
    from d2lfcn.model import get_fcn

    mx.random.seed(0)
    # Several CPU "devices" train data-parallel like several GPUs: MXNet's
    # engine gives each its own worker thread.
    devices = [mx.cpu(i) for i in range(args.devices)]
    h, w = args.size
    shape = (args.batch_size, 3, h, w)
    peaks = [matmul_peak(args.matmul_size, devices)]

    net = get_fcn(args.num_classes, pretrained_base=False, ctx=devices)
    macs = count_macs(net, (1, 3, h, w))
    train_flops = 3 * 2 * sum(macs.values())  # per image; backward = 2x forward
    if args.hybridize != 'none':
        static = args.hybridize == 'static'
        net.hybridize(static_alloc=static, static_shape=static)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1, 'wd': 1e-3})
    loop_name, batch_fn, loss = training_loop_parts()

    # The bare loop's data already lives on the device; the training loop gets
    # its batch as a DataLoader hands it over (fresh arrays every step).
    X = nd.random.uniform(shape=shape)
    y = nd.random.randint(0, args.num_classes, shape=shape[:1] + shape[2:]).astype('float32')
    y[:, :8] = 255  # a void band, so the loss's masking does real work
    X_shards = gluon.utils.split_and_load(X, devices)
    y_shards = gluon.utils.split_and_load(y, devices)

    def bare():
        bare_step(net, loss, trainer, X_shards, y_shards)

    def loop():
        return batch_fn(net, X.copy(), y.copy(), loss, trainer, devices)

    for fn in (bare, loop):  # warm-up: hybridize, allocate, create oneDNN primitives
        fn()
        nd.waitall()
    clocks, sums = {'bare': [], 'loop': []}, None
    for _ in range(args.rounds):
        for name, fn in (('bare', bare), ('loop', loop)):
            for _ in range(args.steps):
                with CpuClock() as clock:
                    out = fn()
                    nd.waitall()
                clocks[name].append(clock)
                if out is not None:
                    sums = out if sums is None else [a + b for a, b in zip(sums, out)]
    loss_sum = float(sums[0].asscalar())  # the lazy sums' one synchronisation
    if args.profile:
        profile_step(loop)
    peaks.append(matmul_peak(args.matmul_size, devices))  # before and after: take the best
    peak = {op: [max(p[op][i] for p in peaks) for i in (0, 1)] for op in peaks[0]}

    result = {
        'batch_size': args.batch_size, 'size': [h, w], 'hybridize': args.hybridize,
        'devices': args.devices,
        'matmul': peak,
        'peak_wall': max(v[0] for v in peak.values()),
        'peak_cpu': max(v[1] for v in peak.values()),
        'macs_per_image': macs, 'train_gflop_per_image': train_flops / 1e9,
        'loop': loop_name, 'loss_finite': math.isfinite(loss_sum),
        'env': {k: os.environ.get(k) for k in ENV_KEYS},
    }
    for name, cs in clocks.items():
        # Other jobs only ever add time: the best step is the best estimate.
        step_s, step_cpu = min(c.wall for c in cs), min(c.cpu for c in cs)
        result.update({
            f'{name}_step_s': step_s,
            f'{name}_images_per_s': args.batch_size / step_s,
            f'{name}_gflops': train_flops * args.batch_size / step_s / 1e9,
            f'{name}_gflops_cpu': train_flops * args.batch_size / step_cpu / 1e9,
            f'{name}_cores_busy': sum(c.cpu for c in cs) / sum(c.wall for c in cs),
        })
    result['loop_overhead'] = result['loop_step_s'] / result['bare_step_s'] - 1
    result['loop_overhead_cpu'] = result['bare_gflops_cpu'] / result['loop_gflops_cpu'] - 1
    return result


def report(r):
    """Print one setting's results with the ratios the targets ask for."""
    for op, (wall, cpu) in r['matmul'].items():
        print(f'matmul peak, {op}: {wall:.1f} GFLOP/s, {cpu:.1f} GFLOP per CPU-second')
    macs = r['macs_per_image']
    print('forward multiply-adds per image: ' + ', '.join(
        f'{k} {v / 1e9:.3f} G' for k, v in sorted(macs.items()) if v))
    print(f"training FLOPs per image (2 x MACs, x3 for backward): "
          f"{r['train_gflop_per_image']:.1f} GFLOP")
    print(f"batch {r['batch_size']} at {r['size'][0]}x{r['size'][1]}, "
          f"{r['devices']} CPU device(s), hybridize={r['hybridize']}, threads: " +
          ', '.join(f'{k}={v}' for k, v in r['env'].items() if v))
    for name in ('bare', 'loop'):
        print(f"{name:>4} step {r[name + '_step_s']:6.2f} s: "
              f"{r[name + '_images_per_s']:.3f} images/s "
              f"({1 / r[name + '_images_per_s']:.2f} s/image), "
              f"{r[name + '_gflops']:.1f} GFLOP/s = {r[name + '_gflops'] / r['peak_wall']:.0%} "
              f"of peak; per CPU-second {r[name + '_gflops_cpu']:.1f} = "
              f"{r[name + '_gflops_cpu'] / r['peak_cpu']:.0%}; "
              f"{r[name + '_cores_busy']:.2f} cores busy")
    print(f"train loop ({r['loop']}): overhead {r['loop_overhead']:+.1%} wall, "
          f"{r['loop_overhead_cpu']:+.1%} CPU over the bare loop")
    threads = min(int(r['env']['OMP_NUM_THREADS'] or os.cpu_count()), os.cpu_count())
    if r['bare_cores_busy'] < 0.9 * threads:
        print(f"note: the steps kept {r['bare_cores_busy']:.2f} cores busy of the "
              f"{threads} they could use: the machine is shared or parts run on "
              f"one thread; compare ratios within one run")
    if not r['loss_finite']:
        print('warning: the loss became NaN or infinite during the run')


def _run_setting(name, env_changes, extra, base_argv):
    """Run one setting in a subprocess; return its result dict or None."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(env_changes)
    cmd = [sys.executable, os.path.abspath(__file__), '--json'] + base_argv + extra
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        print(f'{name}: failed\n{out.stderr[-2000:]}', file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep(argv, repeat):
    """Run every SWEEP setting in subprocesses, `repeat` times round-robin.

    Prints each run as it ends and then every setting's best run: on a shared
    machine the load drifts, and round-robin repeats give each setting a
    chance at a quiet moment.
    """
    base_argv, skip = [], False
    for a in argv:  # drop --sweep and --repeat N
        if skip or a == '--sweep':
            skip = False
            continue
        if a == '--repeat':
            skip = True
            continue
        if not a.startswith('--repeat='):
            base_argv.append(a)
    header = (f"{'setting':<24}{'img/s':>7}{'GFLOP/s':>9}{'% peak':>8}"
              f"{'%/CPU-s':>9}{'cores':>7}{'loop +':>8}  (peak GFLOP/s)")

    def row(name, r):
        return (f"{name:<24}{r['loop_images_per_s']:7.3f}{r['loop_gflops']:9.1f}"
                f"{r['loop_gflops'] / r['peak_wall']:8.0%}"
                f"{r['loop_gflops_cpu'] / r['peak_cpu']:9.0%}"
                f"{r['loop_cores_busy']:7.2f}{r['loop_overhead']:+8.1%}  ({r['peak_wall']:.0f})")

    print(header, flush=True)
    best = {}
    for _ in range(repeat):
        for name, env_changes, extra in SWEEP:
            r = _run_setting(name, env_changes, extra, base_argv)
            if r is None:
                continue
            print(row(name, r), flush=True)
            if name not in best or r['loop_images_per_s'] > best[name]['loop_images_per_s']:
                best[name] = r
    if not best:
        return
    if repeat > 1:
        print(f'\nbest of {repeat} runs per setting:\n' + header)
        for name, r in best.items():
            print(row(name, r))
    top_name, top = max(best.items(), key=lambda nr: nr[1]['loop_images_per_s'])
    machine_peak = max(r['peak_wall'] for r in best.values())
    print(f"\nfastest training loop: {top_name}, {top['loop_images_per_s']:.3f} "
          f"images/s, {top['loop_gflops']:.1f} GFLOP/s = "
          f"{top['loop_gflops'] / machine_peak:.0%} of the best matmul peak seen "
          f"({machine_peak:.1f} GFLOP/s), {top['loop_gflops'] / top['peak_wall']:.0%} "
          f"of its own run's peak")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.sweep:
        sweep(argv, args.repeat)
    elif args.json:
        print(json.dumps(run(args)))
    else:
        report(run(args))


if __name__ == '__main__':
    main()
