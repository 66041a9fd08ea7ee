"""Train D2L's FCN: `python -m d2lfcn.train`, the book's recipe by default.

The job itself is `d2lfcn.job.fit`; this module turns flags into a
recipe and shows progress. Explained in chapters/training-at-scale.md.
"""
import sys

from .model import FCN_ARCHS
from .job import BOOK_RECIPE, DEMO_RECIPE, fit, recipe
from .loop import Callback
from .cli import ArgumentParser, run_cli


def _default(name):
    """Return a help suffix naming the book's and the demo's default."""
    book, demo = BOOK_RECIPE[name], DEMO_RECIPE[name]
    fmt = (lambda v: ' '.join(map(str, v))) if isinstance(book, list) else str
    return f' (default: {fmt(book)}; with --demo: {fmt(demo)})'


def _parser():
    p = ArgumentParser(
        prog='python -m d2lfcn.train',
        description="Train D2L's FCN (ResNet-18 v2 backbone) for semantic "
                    'segmentation on Pascal VOC2012, or on the embedded demo '
                    'dataset with --demo. Defaults are the book\'s recipe.',
        epilog='The out dir receives args.json (the resolved flags), classes.json '
               '(class names and colours, read by predict and export), last.params '
               'and last.states (the latest epoch), best.params (best whole-image '
               'mIoU), state.json (what --resume reads), checkpoints/ (the files '
               'those names link to), metrics.csv (crop scores test_*, whole-image '
               'scores whole_*), curves.png and predictions.png; every epoch is '
               'saved so that Ctrl-C, SIGTERM or kill -9 leave one complete, '
               'resumable epoch, and one run at a time may use an out dir. With a '
               'distributed --kvstore, rank 0 writes these, '
               'and every worker writes worker-RANK/last.params and examples.json '
               '(the training images it saw, per epoch). Unless OMP_NUM_THREADS is '
               'set, d2lfcn sets it to the number of cores (MXNet would use half of '
               'them).')
    a = p.add_argument
    a('--data-dir', metavar='PATH',
      help='the VOC2012 folder, or a folder holding VOCdevkit/VOC2012; or your '
           'own dataset: a folder with images/NAME.jpg|png, masks/NAME.png '
           '(one class index per pixel, 255 = void), classes.txt (one name per '
           'line, background first) and optionally train.txt and val.txt '
           '(without them, a seeded 80/20 split, recorded in the out dir) '
           '(default: VOC2012 in $D2LFCN_DATA or ~/.d2lfcn/data, downloaded '
           'there when absent; with --demo: the embedded dataset, generated there)')
    a('--demo', action='store_true',
      help='train on the embedded dataset from scratch (implies '
           '--no-pretrained-base) with a recipe that ends within minutes on a '
           'CPU; flags given explicitly still win')
    a('--demo-layout', choices=['voc', 'folder'],
      help="with --demo, write the embedded dataset in VOC's layout or in the "
           'plain folder layout --data-dir also reads (the same pixels) '
           '(default: voc)')
    a('--num-epochs', type=int, metavar='N', help='epochs to train' + _default('num_epochs'))
    a('--batch-size', type=int, metavar='N',
      help='examples per update, split over the devices; with a distributed '
           '--kvstore, per worker, so an update averages over N x workers '
           'examples' + _default('batch_size'))
    a('--crop-size', type=int, nargs=2, metavar=('H', 'W'),
      help='height and width of the training and test crops, multiples of 32'
           + _default('crop_size'))
    a('--lr', type=float, help='learning rate of SGD' + _default('lr'))
    a('--wd', type=float, help='weight decay' + _default('wd'))
    a('--momentum', type=float, help='SGD momentum' + _default('momentum'))
    a('--lr-schedule', choices=['constant', 'poly', 'cosine'],
      help='learning rate over the run: constant (D2L), poly (power 0.9) or '
           'cosine decay to 0' + _default('lr_schedule'))
    a('--warmup-epochs', type=float, metavar='E',
      help='epochs of linear learning-rate warmup' + _default('warmup_epochs'))
    a('--arch', choices=FCN_ARCHS,
      help="the network: D2L's FCN (fcn32s: class scores at stride 32, "
           "upsampled 32x), or the FCN paper's fcn16s / fcn8s, which add scores "
           'from the stride-16 (and stride-8) features (default: fcn32s)')
    a('--no-pretrained-base', action='store_true',
      help='initialise the backbone randomly instead of loading ImageNet weights '
           'from the Gluon model zoo (default: pretrained; with --demo: random)')
    a('--backbone-params', metavar='PATH',
      help='the weights of a resnet18_v2 classifier (any number of classes, '
           'e.g. the book\'s stand-in) to start the backbone from, also with '
           '--demo (default: the model-zoo ImageNet file in $MXNET_HOME/models, '
           'downloaded when absent)')
    a('--boundary', choices=['ignore', 'background'],
      help="VOC's void band around objects: leave it out of loss and metrics "
           "(ignore), or count it as background as D2L does (default: ignore)")
    dev = p.add_mutually_exclusive_group()
    dev.add_argument('--gpus', metavar='IDS',
                     help='comma-separated GPU ids, e.g. 0,1 (default: every '
                          'GPU, or the CPU when there is none)')
    dev.add_argument('--cpus', type=int, metavar='N',
                     help='train on N CPU contexts, splitting each batch over '
                          'them as over GPUs (default: off)')
    a('--kvstore', choices=['device', 'local', 'dist_sync', 'dist_device_sync'],
      help="how gradients are combined: over this machine's devices, on a device "
           '(device) or on the CPU (local); or across machines through MXNet\'s '
           'parameter server (dist_sync, dist_device_sync), each process started '
           'as a worker with the DMLC_* environment variables, see README '
           "(default: device, gluon.Trainer's)")
    a('--amp', action='store_true',
      help="train in float16 where safe, with MXNet's automatic mixed precision "
           'and dynamic loss scaling; needs GPUs (default: off, float32)')
    a('--num-workers', type=int, metavar='N',
      help='DataLoader worker processes (default: 0 on machines with at most '
           '2 cores, else 4)')
    a('--out-dir', metavar='PATH',
      help='where checkpoints, metrics and figures go' + _default('out_dir'))
    a('--resume', action='store_true',
      help="continue the run saved in --out-dir from its last epoch's checkpoint "
           '(default: start afresh)')
    a('--seed', type=int,
      help='seeds initialisation, shuffling and crops (default: 0)')
    a('--no-hybridize', action='store_true',
      help='run the network imperatively (slower; easier to debug) '
           '(default: hybridized)')
    return p


class ProgressBar(Callback):
    """Show each epoch's batches as a tqdm bar with the latest loss."""

    def __init__(self):
        self.bar = None

    def on_epoch_begin(self, epoch):
        from tqdm import tqdm
        self.bar = tqdm(desc=f'epoch {epoch + 1}', unit='batch', leave=False)

    def on_batch_end(self, step, loss):
        self.bar.set_postfix(loss=f'{loss:.3f}', refresh=False)
        self.bar.update()

    def on_epoch_trained(self, net):
        self.bar.close()


def main(argv=None):
    """Run `python -m d2lfcn.train`: see `--help`.

    Explained in chapters/training-at-scale.md.
    """
    flags = vars(_parser().parse_args(argv))
    # A bar on a terminal only: in a log file it would be noise.
    return fit(recipe(**flags), callbacks=[ProgressBar()] if sys.stderr.isatty() else [])


if __name__ == '__main__':
    run_cli(main)
