"""Show that d2lfcn works: versions, devices, and a bilinear kernel."""
import mxnet as mx

import d2lfcn


def main(argv=None):
    print(f'd2lfcn {d2lfcn.__version__} on MXNet {mx.__version__}, '
          f'devices {d2lfcn.try_all_gpus()}')
    print('bilinear_kernel(1, 1, 4), the 2x upsampling filter:')
    print(d2lfcn.bilinear_kernel(1, 1, 4)[0, 0].asnumpy())


if __name__ == '__main__':
    d2lfcn.run_cli(main)
