"""Measure d2lfcn's training speed against a tuned bare MXNet loop and PyTorch.

Four loops train the same FCN on the same batch (8 images of 320x480 by
default), in one process, round-robin, each timed over whole rounds of
--steps steps that end with every computation finished:

  d2lfcn   d2lfcn's own loop exactly as `python -m d2lfcn.train` runs it:
           train_ch13's epoch function (train_batch with the command's loss,
           LossAndAccuracy(net, SegmentationLoss()), the input's gradient for
           resnet v2's input BatchNorm, the lagged loss check, the
           learning-rate hook), the command's trainer and hybridize call;
           fresh batches each round, as a DataLoader hands them over (the
           loader itself: bench_loader.py).
  bare     the fastest bare MXNet loop we could write for the same network:
           hybridize(static_alloc=True, static_shape=True) with the loss in
           the same cached graph, data already in place, forward, backward,
           SGD step, nothing else (no metrics, no synchronisation).
  stock    the same bare loop on D2L's exact network: the 32x upsampling
           with MXNet's own nn.Conv2DTranspose (oneDNN deconvolution) instead
           of d2lfcn's BlockConv2DTranspose (the same weights and outputs,
           computed as a matrix product); shows what that layer is worth.
  pytorch  D2L's PyTorch FCN (when torch is importable): torchvision's
           resnet18 minus its last two layers, built by hand here (torchvision
           is not installed), a 1x1 conv to the classes and
           ConvTranspose2d(C, C, 64, padding=16, stride=32) with bilinear
           weights; D2L's train_batch_ch13 tuned: the same per-pixel softmax
           cross-entropy (void ignored, averaged per image), loss sum and
           pixel accuracy kept as tensors (no .item() per batch), the faster
           of NCHW and channels_last, torch.set_num_threads(OMP_NUM_THREADS).

The d2lfcn and PyTorch loops both do what D2L's train_batch_ch13 does
(update, loss sum, accuracy); the bare loop only updates: it bounds what any
loop can reach. Reported: each loop's best steady-state step (other jobs only
ever add time, so the best of N rounds is the best estimate) as images/s,
per wall second and per CPU-second; the ratios d2lfcn/bare and
d2lfcn/PyTorch; the warm-up of each loop's first round over its steady state
(graph building, memory planning, operator creation: the first epoch's extra
cost); what switching between evaluation and training costs d2lfcn (with
static memory, a new shape or mode re-plans); the float32 matmul peak and
GFLOP/s (FLOPs counted analytically by walking each network); both networks'
multiply-adds; thread settings; load average before and after.

`--sweep` reruns itself in subprocesses under several MXNet/OpenMP thread
settings (they must be in the environment before MXNet starts) and prints
one table.

    python benchmarks/bench_train.py                 # one setting (~5 min idle)
    python benchmarks/bench_train.py --rounds 8      # more rounds on a busy machine
    python benchmarks/bench_train.py --sweep --no-torch
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
LOOPS = ('d2lfcn', 'bare', 'stock', 'pytorch')
IGNORE_LABEL = 255

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
    ('OMP=2 bare plain', {'OMP_NUM_THREADS': '2'}, ['--hybridize', 'plain']),
    ('OMP=2 bare not hybridized', {'OMP_NUM_THREADS': '2'}, ['--hybridize', 'none']),
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
    p.add_argument('--rounds', type=int, default=5,
                   help='timed rounds after the warm-up round; each runs every loop '
                        'for --steps steps, in a rotating order')
    p.add_argument('--steps', type=int, default=2,
                   help='steps per loop per round (a round ends when all its work is done)')
    p.add_argument('--matmul-size', type=int, default=3072, help='n of the n x n matmul')
    p.add_argument('--devices', type=int, default=1,
                   help='train the MXNet loops data-parallel on this many CPU contexts '
                        '(cpu(0), cpu(1), ...); PyTorch uses one')
    p.add_argument('--hybridize', choices=['static', 'plain', 'none'], default='static',
                   help="the bare loop's network: static = hybridize(static_alloc=True, "
                        'static_shape=True), the tuned setting')
    p.add_argument('--no-torch', action='store_true',
                   help='leave PyTorch out even when it is importable')
    p.add_argument('--torch-format', choices=['auto', 'nchw', 'channels_last'],
                   default='auto', help="PyTorch's memory format; auto times both "
                                        'during warm-up and keeps the faster')
    p.add_argument('--no-switch', action='store_true',
                   help="skip measuring d2lfcn's evaluation/training switch")
    p.add_argument('--profile', action='store_true',
                   help='also print the most expensive operators of one d2lfcn step')
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
    """Return {layer kind: multiply-adds} of one MXNet forward pass on `shape`.

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


def count_torch_macs(net, shape):
    """Return {layer kind: multiply-adds} of one PyTorch forward pass, as count_macs."""
    import torch
    from torch import nn
    macs, handles = {}, []

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, nn.ConvTranspose2d):
            w = module.weight.shape  # (in, out / groups, kh, kw)
            kind, n = 'deconv', x.numel() * w[1] * w[2] * w[3]
        elif isinstance(module, nn.Conv2d):
            w = module.weight.shape  # (out, in / groups, kh, kw)
            kind, n = 'conv', output.numel() * w[1] * w[2] * w[3]
        elif isinstance(module, nn.BatchNorm2d):
            kind, n = 'batchnorm', x.numel()
        else:
            kind, n = type(module).__name__.lower(), 0
        macs[kind] = macs.get(kind, 0) + n

    for m in net.modules():
        if not list(m.children()):
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        net.eval()(torch.zeros(shape))
    net.train()
    for h in handles:
        h.remove()
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


# ------------------------------------------------------------- the d2lfcn loop

def cli_parts(batch_size, size):
    """Return (epoch function, make trainer, make loss) as the CLI has them.

    The only function that knows where d2lfcn keeps its training loop and how
    `python -m d2lfcn.train` assembles it: when the library moves, adapt here.
    """
    from d2lfcn import distributed, job, loop
    args = job.recipe(batch_size=batch_size, crop_size=list(size), no_pretrained_base=True)

    def make_trainer(net):
        return job._trainer(args, net, distributed.placement(args.kvstore))

    def make_loss(net, num_devices):  # as job.fit builds and hybridizes it
        loss = loop.LossAndAccuracy(net, loop.SegmentationLoss())
        loop.hybridize_for_training(loss, num_devices)
        net.hybridize()  # evaluation runs the network alone, without static memory
        return loss

    def lr_fn(step):  # the command's schedule, as job.fit builds it
        return loop.lr_at(step, args.num_epochs * 100, args.lr, args.lr_schedule, 0)

    def epoch(net, batches, loss, trainer, devices, epoch_index):
        hooks = loop.Hooks(loop.LearningRateSchedule(trainer, lr_fn))  # as job.fit adds it
        return loop._train_epoch(net, batches, loss, trainer, devices,
                                 loop.split_batch, epoch_index, hooks)

    return epoch, make_trainer, make_loss


def make_d2lfcn_loop(args, devices, X, y):
    """Return (round function, net, evaluate) of d2lfcn's loop."""
    import mxnet as mx
    from mxnet import nd
    from d2lfcn.model import get_fcn
    epoch, make_trainer, make_loss = cli_parts(args.batch_size, args.size)
    mx.random.seed(0)
    net = get_fcn(args.num_classes, pretrained_base=False, ctx=devices)
    trainer = make_trainer(net)
    loss = make_loss(net, len(devices))
    count = [0]

    def run_round():
        # Fresh arrays, as a DataLoader hands them over: made before the clock starts.
        batches = [(X.copy(), y.copy()) for _ in range(args.steps)]
        nd.waitall()

        def timed():
            metric = epoch(net, batches, loss, trainer, devices, count[0])
            count[0] += 1
            nd.waitall()  # the last update, which no metric waits for
            return metric[0] / metric[2]  # mean loss: the loop's own synchronisation
        return timed

    return run_round, net


# --------------------------------------------------------------- the bare loop

def make_bare_loop(args, devices, X, y, stock=False):
    """Return (round function, net) of the tuned bare MXNet loop.

    stock=True upsamples with MXNet's own nn.Conv2DTranspose, exactly D2L's
    network, instead of d2lfcn's BlockConv2DTranspose (same weights, same
    outputs to float rounding, computed as a matrix product).
    """
    import mxnet as mx
    from mxnet import autograd, gluon, nd
    from mxnet.gluon import nn
    from d2lfcn.model import get_fcn
    from d2lfcn.loop import SegmentationLoss

    class NetWithLoss(gluon.HybridBlock):
        """One cached graph from image to per-example loss."""

        def __init__(self, net, loss):
            super().__init__(prefix='')
            self.net, self.loss = net, loss

        def hybrid_forward(self, F, x, label):
            return self.loss(self.net(x), label)

    mx.random.seed(0)
    if stock:  # build the FCN with MXNet's own layer where d2lfcn has its own
        from d2lfcn import model
        block, model.BlockConv2DTranspose = model.BlockConv2DTranspose, nn.Conv2DTranspose
        try:
            net = get_fcn(args.num_classes, pretrained_base=False, ctx=devices)
        finally:
            model.BlockConv2DTranspose = block
        assert type(net.upsample) is nn.Conv2DTranspose
    else:
        net = get_fcn(args.num_classes, pretrained_base=False, ctx=devices)
    step_net = NetWithLoss(net, SegmentationLoss())
    if args.hybridize != 'none':
        static = args.hybridize == 'static'
        step_net.hybridize(static_alloc=static, static_shape=static)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.1, 'wd': 1e-3})
    X_shards = gluon.utils.split_and_load(X, devices)
    y_shards = gluon.utils.split_and_load(y, devices)

    def step():
        with autograd.record():
            ls = [step_net(X_s, y_s) for X_s, y_s in zip(X_shards, y_shards)]
        for l in ls:
            l.backward()
        trainer.step(args.batch_size)

    def run_round():
        def timed():
            for _ in range(args.steps):
                step()
            nd.waitall()
        return timed

    return run_round, net


# ------------------------------------------------------------- the PyTorch loop

def bilinear_kernel(in_channels, out_channels, kernel_size):
    """D2L's bilinear_kernel, in numpy."""
    import numpy as np
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = (np.arange(kernel_size).reshape(-1, 1), np.arange(kernel_size).reshape(1, -1))
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), np.float32)
    weight[range(in_channels), range(out_channels), :, :] = filt
    return weight


def torch_fcn(num_classes):
    """Return D2L's PyTorch FCN: torchvision's resnet18 (v1) features, built by hand."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):  # torchvision.models.resnet.BasicBlock
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                                nn.BatchNorm2d(cout))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    def layer(cin, cout, stride):
        return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))

    # resnet18's children minus avgpool and fc, as D2L's
    # nn.Sequential(*list(pretrained_net.children())[:-2]).
    net = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                        nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1),
                        layer(64, 64, 1), layer(64, 128, 2), layer(128, 256, 2),
                        layer(256, 512, 2))
    for m in net.modules():  # torchvision's initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
    net.add_module('final_conv', nn.Conv2d(512, num_classes, kernel_size=1))
    net.add_module('transpose_conv', nn.ConvTranspose2d(
        num_classes, num_classes, kernel_size=64, padding=16, stride=32))
    with torch.no_grad():
        net.transpose_conv.weight.copy_(torch.from_numpy(
            bilinear_kernel(num_classes, num_classes, 64)))
    return net


def make_torch_loop(args, X, y, threads):
    """Return (round function, net, chosen memory format) of D2L's PyTorch FCN."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch_fcn(args.num_classes).train()
    # D2L's PyTorch recipe: SGD, lr 0.001, wd 1e-3, loss summed over the batch.
    trainer = torch.optim.SGD(net.parameters(), lr=0.001, weight_decay=1e-3)
    X, y = torch.from_numpy(X.asnumpy()), torch.from_numpy(y.asnumpy()).long()
    state = {'X': X, 'sums': torch.zeros(3, dtype=torch.float64)}

    def loss(pred, label):  # per-pixel CE, void left out, averaged per image
        nll = F.cross_entropy(pred, label, reduction='none', ignore_index=IGNORE_LABEL)
        count = (label != IGNORE_LABEL).sum(dim=(1, 2)).clamp(min=1)
        return nll.sum(dim=(1, 2)) / count

    def step():
        trainer.zero_grad(set_to_none=True)
        pred = net(state['X'])
        l = loss(pred, y)
        l.sum().backward()
        trainer.step()
        with torch.no_grad():  # D2L's metrics, kept as tensors: no sync per batch
            valid = y != IGNORE_LABEL
            correct = ((pred.argmax(dim=1) == y) & valid).sum()
            state['sums'] += torch.stack([l.sum().double(), correct.double(),
                                          valid.sum().double()])

    def use(fmt):
        mf = torch.channels_last if fmt == 'channels_last' else torch.contiguous_format
        net.to(memory_format=mf)
        state['X'] = X.contiguous(memory_format=mf)

    def run_round():
        def timed():
            for _ in range(args.steps):
                step()
        return timed

    fmt = args.torch_format
    if fmt == 'auto':  # a warm-up step in each format, then the faster of a timed one
        times = {}
        for f in ('nchw', 'channels_last'):
            use(f)
            step()
            t = time.perf_counter()
            step()
            times[f] = time.perf_counter() - t
        fmt = min(times, key=times.get)
    use(fmt)
    return run_round, net, fmt


# ------------------------------------------------------------------ profiling

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
    print(f'operators of one d2lfcn round, {total / 1e3:.2f} s in all '
          '(ops the engine runs as one bulk show as a comma list):')
    for name, v in sorted(ops.items(), key=lambda kv: -kv[1]['Total'])[:top]:
        short = name if len(name) < 60 else name[:57] + '...'
        print(f"  {v['Total'] / total:5.1%} {v['Total'] / 1e3:7.3f} s  {short}")


def measure_switch(args, net, run_round, devices, median_step):
    """Return what evaluation costs d2lfcn between two epochs, in seconds.

    Evaluates two full batches and a smaller last one (as an epoch's
    evaluation ends), twice, then trains one more round: with static memory
    each new shape re-plans a graph. Compared with the median round, as one
    round cannot be compared with the best of several.
    """
    from mxnet import nd
    from d2lfcn.loop import evaluate_segmentation
    h, w = args.size
    sizes = [args.batch_size, args.batch_size, max(1, args.batch_size // 3)]
    batches = [(nd.random.uniform(shape=(n, 3, h, w)), nd.zeros((n, h, w))) for n in sizes]
    times = []
    for _ in range(2):  # the second evaluation shows the steady cost of the same work
        with CpuClock() as clock:
            evaluate_segmentation(net, batches, devices, args.num_classes)
        times.append(clock.wall)
    timed = run_round()
    with CpuClock() as clock:
        timed()
    return {'first_eval_s': times[0], 'eval_s': times[1],
            'train_after_eval_extra_s': clock.wall - median_step * args.steps}


# ------------------------------------------------------------------ the run

def run(args):
    """Measure one setting in this process; return a dict of results."""
    import d2lfcn  # noqa: F401  first: it defaults OMP_NUM_THREADS before MXNet starts
    import mxnet as mx
    from mxnet import nd
    from d2lfcn.model import get_fcn

    load_before = os.getloadavg()
    threads = int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count())
    devices = [mx.cpu(i) for i in range(args.devices)]
    h, w = args.size
    shape = (args.batch_size, 3, h, w)
    peaks = [matmul_peak(args.matmul_size, devices)]

    mx.random.seed(0)
    macs = count_macs(get_fcn(args.num_classes, pretrained_base=False), (1, 3, h, w))
    train_flops = 3 * 2 * sum(macs.values())  # per image; backward = 2x forward

    X = nd.random.uniform(shape=shape)
    y = nd.random.randint(0, args.num_classes, shape=shape[:1] + shape[2:]).astype('float32')
    y[:, :8] = IGNORE_LABEL  # a void band, so the loss's masking does real work

    loops, torch_info = {}, None
    loops['d2lfcn'], d2lfcn_net = make_d2lfcn_loop(args, devices, X, y)
    loops['bare'], _ = make_bare_loop(args, devices, X, y)
    loops['stock'], _ = make_bare_loop(args, devices, X, y, stock=True)
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            loops['pytorch'], tnet, fmt = make_torch_loop(args, X, y, threads)
            torch_info = {'version': torch.__version__, 'threads': torch.get_num_threads(),
                          'format': fmt, 'macs': count_torch_macs(tnet, (1, 3, h, w))}

    names = list(loops)
    clocks = {name: [] for name in names}
    warmup, losses = {}, []
    for r in range(args.rounds + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            timed = loops[name]()
            with CpuClock() as clock:
                out = timed()
            if name == 'd2lfcn':
                losses.append(out)
            if r == 0:
                warmup[name] = clock
            else:
                clocks[name].append(clock)

    result = {
        'batch_size': args.batch_size, 'size': [h, w], 'hybridize': args.hybridize,
        'devices': args.devices, 'steps': args.steps, 'rounds': args.rounds,
        'macs_per_image': macs, 'train_gflop_per_image': train_flops / 1e9,
        'loss_finite': all(math.isfinite(v) for v in losses),
        'env': {k: os.environ.get(k) for k in ENV_KEYS}, 'threads': threads,
        'torch': torch_info,
    }
    for name, cs in clocks.items():
        # Other jobs only ever add time: the best round is the best estimate.
        step_s = min(c.wall for c in cs) / args.steps
        step_cpu = min(c.cpu for c in cs) / args.steps
        result[name] = {
            'step_s': step_s, 'images_per_s': args.batch_size / step_s,
            'images_per_cpu_s': args.batch_size / step_cpu,
            'gflops': train_flops * args.batch_size / step_s / 1e9,
            'gflops_cpu': train_flops * args.batch_size / step_cpu / 1e9,
            'cores_busy': sum(c.cpu for c in cs) / sum(c.wall for c in cs),
            'median_step_s': sorted(c.wall for c in cs)[len(cs) // 2] / args.steps,
            'warmup_s': warmup[name].wall - step_s * args.steps,
        }
    if not args.no_switch:
        result['switch'] = measure_switch(args, d2lfcn_net, loops['d2lfcn'], devices,
                                          result['d2lfcn']['median_step_s'])
    if args.profile:
        profile_step(loops['d2lfcn']())
    peaks.append(matmul_peak(args.matmul_size, devices))  # before and after: take the best
    peak = {op: [max(p[op][i] for p in peaks) for i in (0, 1)] for op in peaks[0]}
    result.update(matmul=peak, peak_wall=max(v[0] for v in peak.values()),
                  peak_cpu=max(v[1] for v in peak.values()))
    for other in ('bare', 'stock', 'pytorch'):
        if other in result:
            result[f'd2lfcn_over_{other}'] = (result['d2lfcn']['images_per_s'] /
                                              result[other]['images_per_s'])
            result[f'd2lfcn_over_{other}_cpu'] = (result['d2lfcn']['images_per_cpu_s'] /
                                                  result[other]['images_per_cpu_s'])
    result['load_average'] = [load_before, os.getloadavg()]
    return result


def report(r):
    """Print one setting's results with the ratios the targets ask for."""
    load = ', '.join('/'.join(f'{v:.2f}' for v in la) for la in r['load_average'])
    print(f'load average (1/5/15 min) before, after: {load}')
    for op, (wall, cpu) in r['matmul'].items():
        print(f'matmul peak, {op}: {wall:.1f} GFLOP/s, {cpu:.1f} GFLOP per CPU-second')
    macs = r['macs_per_image']
    print('MXNet forward multiply-adds per image: ' + ', '.join(
        f'{k} {v / 1e9:.3f} G' for k, v in sorted(macs.items()) if v))
    if r['torch']:
        tm = r['torch']['macs']
        print('PyTorch forward multiply-adds per image: ' + ', '.join(
            f'{k} {v / 1e9:.3f} G' for k, v in sorted(tm.items()) if v))
        ours, theirs = sum(macs.values()), sum(tm.values())
        conv = sum(macs.get(k, 0) for k in ('conv', 'deconv'))
        tconv = sum(tm.get(k, 0) for k in ('conv', 'deconv'))
        print(f'  networks: MXNet resnet18_v2 (pre-activation, input BatchNorm) vs '
              f'PyTorch resnet18 v1 (torchvision layout); convolutions '
              f'{"identical" if conv == tconv else f"differ by {conv / tconv - 1:+.2%}"}, '
              f'all multiply-adds differ by {ours / theirs - 1:+.2%}; the 32x '
              f"upsampling is d2lfcn's Conv2DTranspose (computed as a matrix product) "
              f"vs torch's ConvTranspose2d")
    print(f"training FLOPs per image (2 x MACs, x3 for backward): "
          f"{r['train_gflop_per_image']:.1f} GFLOP")
    env = ', '.join(f'{k}={v}' for k, v in r['env'].items() if v)
    tinfo = (f"; torch {r['torch']['version']} with {r['torch']['threads']} threads, "
             f"{r['torch']['format']}" if r['torch'] else '')
    print(f"batch {r['batch_size']} at {r['size'][0]}x{r['size'][1]}, "
          f"{r['devices']} MXNet CPU device(s), bare loop hybridize={r['hybridize']}, "
          f"threads: {env or 'defaults'}{tinfo}")
    print(f"best of {r['rounds']} rounds of {r['steps']} steps (median in brackets):")
    for name in LOOPS:
        if name not in r:
            continue
        v = r[name]
        print(f"  {name:>7}: {v['images_per_s']:.3f} images/s "
              f"({r['batch_size'] / v['median_step_s']:.3f}), step {v['step_s']:.2f} s, "
              f"{v['gflops']:.1f} GFLOP/s = {v['gflops'] / r['peak_wall']:.0%} of peak; "
              f"{v['images_per_cpu_s']:.3f} images per CPU-second; "
              f"{v['cores_busy']:.2f} cores busy; warm-up +{v['warmup_s']:.1f} s")
    print(f"d2lfcn / bare    = {r['d2lfcn_over_bare']:.3f} "
          f"(per CPU-second {r['d2lfcn_over_bare_cpu']:.3f}); goal >= 0.95")
    print(f"d2lfcn / stock   = {r['d2lfcn_over_stock']:.3f} "
          f"(per CPU-second {r['d2lfcn_over_stock_cpu']:.3f}); stock is the bare loop "
          "on D2L's exact network (MXNet's own Conv2DTranspose)")
    if 'd2lfcn_over_pytorch' in r:
        print(f"d2lfcn / PyTorch = {r['d2lfcn_over_pytorch']:.3f} "
              f"(per CPU-second {r['d2lfcn_over_pytorch_cpu']:.3f}); goal >= 1.10")
    print(f"first-epoch warm-up of d2lfcn (first round over steady state): "
          f"+{r['d2lfcn']['warmup_s']:.1f} s")
    if 'switch' in r:
        s = r['switch']
        print(f"evaluation of 2 full batches and a smaller last one: first "
              f"{s['first_eval_s']:.2f} s (builds the graph), again {s['eval_s']:.2f} s; "
              f"the training round after it: {s['train_after_eval_extra_s']:+.2f} s "
              f"over the median round")
    busy = r['bare']['cores_busy']
    threads = min(r['threads'], os.cpu_count())
    if busy < 0.9 * threads:
        print(f"note: the bare loop kept {busy:.2f} cores busy of the {threads} it "
              f"could use: the machine is shared or parts run on one thread; compare "
              f"ratios within one run")
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
    header = (f"{'setting':<26}{'d2lfcn':>8}{'bare':>8}{'torch':>8}{'GFLOP/s':>9}"
              f"{'% peak':>8}{'/bare':>7}{'/torch':>8}  (img/s; peak GFLOP/s)")

    def row(name, r):
        t = r.get('pytorch', {}).get('images_per_s')
        ratio = r.get('d2lfcn_over_pytorch')
        return (f"{name:<26}{r['d2lfcn']['images_per_s']:8.3f}"
                f"{r['bare']['images_per_s']:8.3f}{t if t else float('nan'):8.3f}"
                f"{r['d2lfcn']['gflops']:9.1f}{r['d2lfcn']['gflops'] / r['peak_wall']:8.0%}"
                f"{r['d2lfcn_over_bare']:7.3f}{ratio if ratio else float('nan'):8.3f}"
                f"  ({r['peak_wall']:.0f})")

    print(header, flush=True)
    best = {}
    for _ in range(repeat):
        for name, env_changes, extra in SWEEP:
            r = _run_setting(name, env_changes, extra, base_argv)
            if r is None:
                continue
            print(row(name, r), flush=True)
            if name not in best or (r['d2lfcn']['images_per_s'] >
                                    best[name]['d2lfcn']['images_per_s']):
                best[name] = r
    if not best:
        return
    if repeat > 1:
        print(f'\nbest of {repeat} runs per setting:\n' + header)
        for name, r in best.items():
            print(row(name, r))
    top_name, top = max(best.items(), key=lambda nr: nr[1]['d2lfcn']['images_per_s'])
    machine_peak = max(r['peak_wall'] for r in best.values())
    print(f"\nfastest d2lfcn loop: {top_name}, {top['d2lfcn']['images_per_s']:.3f} "
          f"images/s, {top['d2lfcn']['gflops']:.1f} GFLOP/s = "
          f"{top['d2lfcn']['gflops'] / machine_peak:.0%} of the best matmul peak seen "
          f"({machine_peak:.1f} GFLOP/s), "
          f"{top['d2lfcn']['gflops'] / top['peak_wall']:.0%} of its own run's peak")


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
