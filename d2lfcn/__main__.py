"""Show that d2lfcn works: versions, devices, a cross-correlation and a bilinear kernel."""
import argparse

import mxnet as mx
from mxnet import nd

import d2lfcn


def main(argv=None):
    argparse.ArgumentParser(prog='python -m d2lfcn', description=__doc__).parse_args(argv)
    print(f'd2lfcn {d2lfcn.__version__} on MXNet {mx.__version__}, '
          f'devices {d2lfcn.try_all_gpus()}')
    X = nd.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    K = nd.array([[0, 1], [2, 3]])
    print('corr2d(X, K) from chapters/conv-layer.md (expect [[19 25] [37 43]]):')
    print(d2lfcn.corr2d(X, K).asnumpy())
    print('bilinear_kernel(1, 1, 4), the 2x upsampling filter:')
    print(d2lfcn.bilinear_kernel(1, 1, 4)[0, 0].asnumpy())


if __name__ == '__main__':
    d2lfcn.run_cli(main)
