"""Measure ONNX inference (onnxruntime, no MXNet) against MXNet's, per image, in one run.

For each architecture, the same random (non-initial) weights are exported
with `d2lfcn.deploy.export_fcn(..., with_onnx=True)` and run two ways on the
same images: `d2lfcn.inference.predict_image` on the network hybridized as
`python -m d2lfcn.predict` does, and `d2lfcn.runtime.OnnxFCN.predict`. Both
calls include what a user waits for: normalisation, padding to multiples of
32, the network and the argmax. The two alternate, a round each, and the
median of each is reported, with their ratio (onnxruntime / MXNet: below 1
is faster), and how far their scores and class maps are apart.

    python benchmarks/bench_onnx.py                # 320x480 and 500x375, 3 archs
    python benchmarks/bench_onnx.py --rounds 30 --archs fcn32s
"""
import argparse
import os
import statistics
import sys
import tempfile
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--archs', nargs='+', default=['fcn32s', 'fcn16s', 'fcn8s'])
    p.add_argument('--sizes', nargs='+', default=['320x480', '375x500'],
                   help='image sizes HxW (default: the training crop and a VOC image)')
    p.add_argument('--rounds', type=int, default=15, help='timed calls of each (default: 15)')
    p.add_argument('--threads', type=int, default=None,
                   help='threads of both runtimes (default: OMP_NUM_THREADS, which d2lfcn '
                        'sets to the cores)')
    return p.parse_args()


def main():
    args = parse()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    import d2lfcn  # first: it sets the OpenMP threads before MXNet starts
    import numpy as np
    from mxnet import nd
    from d2lfcn.deploy import export_fcn
    from d2lfcn.runtime import OnnxFCN
    threads = args.threads or int(os.environ['OMP_NUM_THREADS'])
    rng = np.random.RandomState(0)
    print(f'threads: {threads} (MXNet OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]}, '
          f'onnxruntime intra_op_num_threads={threads}); median of {args.rounds} calls')
    print(f"{'arch':7} {'image':>8} {'MXNet ms':>9} {'ONNX ms':>9} {'ONNX/MXNet':>10} "
          f"{'max |diff|':>11} {'rel diff':>9} {'same class':>10}")
    for arch in args.archs:
        net = d2lfcn.get_fcn(21, pretrained_base=False, arch=arch)
        net(nd.zeros((1, 3, 64, 64)))
        for name, p in net.collect_params().items():  # nothing at its initial value
            if name.endswith(('running_mean', 'beta', 'bias')):
                value = rng.normal(0, 0.1, p.shape)
            elif name.endswith(('running_var', 'gamma')):
                value = rng.uniform(0.5, 2.0, p.shape)
            else:
                value = p.data().asnumpy() * rng.uniform(0.8, 1.2, p.shape)
            p.set_data(nd.array(value.astype(np.float32)))
        with tempfile.TemporaryDirectory() as tmp:
            onnx_file = export_fcn(net, tmp, arch, 320, 480, True, d2lfcn.VOC_CLASSES,
                                   d2lfcn.voc_palette()[:21].tolist())[2]
            fcn = OnnxFCN(onnx_file, threads=threads)
            net.hybridize(static_alloc=True)
            for size in args.sizes:
                h, w = map(int, size.split('x'))
                img = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
                x = d2lfcn.pad_to_stride(d2lfcn.normalize_array(img))
                ours = net(nd.array(x.transpose(2, 0, 1)[None]))[0].asnumpy()
                theirs = fcn.scores(x)
                diff = np.abs(ours - theirs).max()
                same = (ours.argmax(0) == theirs.argmax(0)).mean()
                times = {'mxnet': [], 'onnx': []}
                calls = {'mxnet': lambda: d2lfcn.predict_image(net, img),
                         'onnx': lambda: fcn.predict(img)}
                for _ in range(3):  # warm-up: graphs, memory, kernels
                    for call in calls.values():
                        call()
                for _ in range(args.rounds):
                    for name, call in calls.items():
                        tic = time.perf_counter()
                        call()
                        times[name].append(time.perf_counter() - tic)
                mx_ms, onnx_ms = (1000 * statistics.median(times[k]) for k in ('mxnet', 'onnx'))
                print(f'{arch:7} {size:>8} {mx_ms:9.1f} {onnx_ms:9.1f} {onnx_ms / mx_ms:10.3f} '
                      f'{diff:11.2e} {diff / np.abs(ours).max():9.1e} {same:10.6f}')
    load = os.getloadavg() if hasattr(os, 'getloadavg') else ('?',) * 3
    print(f'load average (1/5/15 min) after: {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}')


if __name__ == '__main__':
    main()
