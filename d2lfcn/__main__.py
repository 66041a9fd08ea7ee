"""Check this environment for d2lfcn: versions, devices, threads, data and weights.

Run it first: `python -m d2lfcn`. It exits 0 when the demo
(`python -m d2lfcn.train --demo`) can run here, else it prints one line
saying why and exits 2. VOC2012 and the pretrained weights are reported, with
what to do when they are missing, but the demo needs neither.
Explained in chapters/training-at-scale.md and README.md.
"""
import importlib.metadata
import os
import re
import sys
import textwrap

import mxnet as mx
import numpy as np
from mxnet import autograd, nd

import d2lfcn

from .compat import REMOVED_ALIASES
from .download import file_sha1
from .job import DEMO_RECIPE
from .model import BACKBONE, backbone_file, backbone_sha1, backbone_url, get_fcn
from .synthetic import demo_voc_dir
from .cli import ArgumentParser, run_cli
from .utils import UserError, default_data_dir, existing_parent, first_line, try_all_gpus
from .voc import VOC_SHA1, VOC_TAR, voc_example_paths, voc_split_names

VOC_SPLIT_SIZES = {'train': 1464, 'val': 1449}  # VOC2012's segmentation splits


def _supported_python():
    """Return setup.py's python_requires, as the installed package records it."""
    try:
        return importlib.metadata.metadata('d2lfcn')['Requires-Python'] or 'of any version'
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "as setup.py's python_requires says"


def mxnet_builds():
    """Return the names of the installed pip packages that provide `mxnet`."""
    names = {dist.metadata['Name'] for dist in importlib.metadata.distributions()}
    return sorted(n for n in names if n and re.fullmatch(r'mxnet(-\w+)?', n.lower()))


def is_writable(path):
    """Return True if `path` is a writable folder or could be created as one."""
    path = existing_parent(path)  # the nearest existing folder decides
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def check_computation():
    """Run the hybridized FCN forward and backward on a 64x64 image; return None or the error."""
    try:
        net = get_fcn(num_classes=21, pretrained_base=False, ctx=mx.cpu())
        net.hybridize(static_alloc=True)
        X = nd.random.uniform(shape=(1, 3, 64, 64))
        with autograd.record():
            Y = net(X)                                # (1, 21, 64, 64)
            loss = (Y ** 2).mean()
        loss.backward()
        grad = net.score.weight.grad()
        if Y.shape != (1, 21, 64, 64) or not np.isfinite(grad.asnumpy()).all():
            return f'the FCN gave shape {Y.shape} or non-finite gradients'
    except Exception as e:  # MXNet's errors have many types; report any
        return _describe(e)
    return None


def _describe(error):
    """Return an exception's type and why it happened, on one line."""
    name, why = type(error).__name__, first_line(error)
    return name if why == name else f'{name}: {why}'


def check_voc(data_dir):
    """Return (present, lines) describing VOC2012 in `data_dir`."""
    voc_dir = os.path.join(data_dir, 'VOCdevkit', 'VOC2012')
    tar = os.path.join(data_dir, VOC_TAR)
    how = [f'Without network: copy {VOC_TAR} (about 2 GB, sha1 {VOC_SHA1}) into '
           f'{data_dir}, or extract it anywhere and pass --data-dir PATH to '
           'python -m d2lfcn.train.',
           'With network: python -m d2lfcn.train downloads it there.']
    if os.path.isdir(voc_dir):
        return _check_voc_tree(voc_dir)
    if os.path.isfile(tar):
        actual = file_sha1(tar)
        if actual == VOC_SHA1:
            return True, [f'present: {tar} (sha1 verified); python -m d2lfcn.train '
                          f'extracts it to {voc_dir} on first use, without network']
        return False, [f'corrupt: {tar} has sha1 {actual}, not {VOC_SHA1}; delete it.'] + how
    lines = [f'missing: neither {voc_dir} nor {tar} exists.']
    if os.path.isfile(tar + '.part'):
        size = os.path.getsize(tar + '.part') / 2**20
        lines.append(f'A partial download ({size:.0f} MB) is there; '
                     'python -m d2lfcn.train resumes it.')
    return False, lines + how


def _check_voc_tree(voc_dir):
    """Return (present, lines) for an extracted VOC2012 folder."""
    counts, missing = {}, []
    try:
        for split in ('train', 'val'):
            names, _ = voc_split_names(voc_dir, split == 'train')
            counts[split] = len(names)
            for name in names:
                missing += [p for p in voc_example_paths(voc_dir, name) if not os.path.isfile(p)]
    except UserError as e:
        return False, [f'incomplete: {e}; delete {voc_dir} and extract {VOC_TAR} again']
    if missing:
        return False, [f'incomplete: {len(missing)} files the splits list are missing, '
                       f'e.g. {missing[0]}; delete {voc_dir} and extract {VOC_TAR} again']
    note = '' if counts == VOC_SPLIT_SIZES else (
        f" (VOC2012 has {VOC_SPLIT_SIZES['train']} + {VOC_SPLIT_SIZES['val']}: "
        'this is another set)')
    # Single files have no published checksums; the tar's sha1 was checked
    # when d2lfcn extracted it, and each image is checked as it is read.
    return True, [f"present: {voc_dir}, {counts['train']} train + {counts['val']} val "
                  f'images, every file the splits list exists{note}']


def check_backbone():
    """Return (present, lines) describing the model zoo's resnet18_v2 weights."""
    path = backbone_file()
    expected = backbone_sha1()  # the model zoo's own checksum
    name = os.path.basename(path)
    url = backbone_url()
    how = [f'Without network: copy {name} (sha1 {expected}) into {os.path.dirname(path)}, '
           'or pass --backbone-params PATH to python -m d2lfcn.train; '
           f'on a machine with network, download {url} and unzip it.',
           'Or train from scratch with --no-pretrained-base (the demo does).']
    if not os.path.isfile(path):
        return False, [f'missing: {path}.'] + how
    actual = file_sha1(path)
    if actual != expected:
        return False, [f'corrupt: {path} has sha1 {actual}, not {expected}; delete it.'] + how
    return True, [f'present: {path} (sha1 verified)']


def _row(name, lines):
    """Print `lines`, wrapped to 100 columns, with `name` in a left column."""
    for line in [lines] if isinstance(lines, str) else lines:
        for part in textwrap.wrap(line, 87, subsequent_indent='  ', break_on_hyphens=False,
                                  break_long_words=False):
            print(f'{name:<12} {part}')
            name = ''


def _report_setup(problems):
    """Print versions, devices and threads; append what stops the demo to `problems`."""
    version = '.'.join(map(str, sys.version_info[:3]))
    _row('Python', f'{version} at {sys.executable} (d2lfcn supports Python '
                   f'{_supported_python()})')
    builds = mxnet_builds()
    gpu_build = mx.runtime.Features().is_enabled('CUDA')
    _row('MXNet', f"{mx.__version__}, {'CUDA' if gpu_build else 'CPU'} build "
                  f"(pip package {', '.join(builds) or 'unknown'})")
    if len(builds) > 1:
        _row('', 'warning: several MXNet builds share one `mxnet` folder; '
                 f'keep one: pip uninstall {builds[-1]}')
    note = ''
    if np.lib.NumpyVersion(np.__version__) >= '1.24.0':
        note = f" (d2lfcn restored np.{', np.'.join(REMOVED_ALIASES)} for MXNet)"
    _row('numpy', np.__version__ + note)
    try:
        gluoncv = importlib.metadata.version('gluoncv')
    except importlib.metadata.PackageNotFoundError:
        gluoncv = 'not installed (pip install gluoncv==0.10.5.post0)'
    _row('gluoncv', gluoncv)
    try:
        devices = try_all_gpus()
        cpu_only = devices[0].device_type == 'cpu'
        _row('devices', f"{devices}{': no GPU, training runs on the CPU' if cpu_only else ''}")
    except mx.base.MXNetError as e:
        problems.append(f'MXNet cannot list the GPUs ({_describe(e)}); '
                        "install the CPU build: pip install 'd2lfcn[cpu]'")
        _row('devices', 'error: ' + problems[-1])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    threads = os.environ.get('OMP_NUM_THREADS', 'unset')
    whose = ("d2lfcn's default: the CPUs this process may use" if threads == str(cpus)
             else f'set before d2lfcn was imported; this process may use {cpus} CPUs')
    _row('OpenMP', f'OMP_NUM_THREADS={threads} ({whose})')
    failure = check_computation()
    if failure:
        package = builds[0] if builds else 'mxnet'
        problems.append(f'MXNet cannot train the FCN on the CPU ({failure}); reinstall '
                        f'it: pip install --force-reinstall {package}=={mx.__version__}')
    _row('compute', 'error: ' + problems[-1] if failure else
         'the FCN, hybridized, runs forward and backward: ok')


def _report_folders(problems):
    """Print where data, weights and the demo's run go; append blockers to `problems`."""
    data_dir = default_data_dir()
    source = ('$D2LFCN_DATA' if 'D2LFCN_DATA' in os.environ
              else 'default; set $D2LFCN_DATA to move it')
    if is_writable(data_dir):
        _row('data', f'{data_dir} ({source}): writable')
    else:
        try:  # an existing demo set is reused without writing anything
            demo_voc_dir(data_dir)
            _row('data', f'{data_dir} ({source}): not writable, but the demo set is there')
        except (OSError, UserError):
            problems.append(f'{data_dir}: not a writable folder, and the demo writes its dataset '
                            'there; set $D2LFCN_DATA to a writable folder')
            _row('data', 'error: ' + problems[-1])
    models = os.path.dirname(backbone_file())
    source = '$MXNET_HOME/models' if 'MXNET_HOME' in os.environ else (
        'default; set $MXNET_HOME to use $MXNET_HOME/models')
    _row('weights', f'{models} ({source})')
    out_dir = os.path.abspath(DEMO_RECIPE['out_dir'])
    if (os.path.exists(out_dir) and not os.path.isdir(out_dir)) or not is_writable(out_dir):
        problems.append(f'{out_dir}: cannot write the demo run there; run from a '
                        'writable folder or pass --out-dir to the demo')
        _row('demo run', 'error: ' + problems[-1])
    else:
        _row('demo run', f'{out_dir}: writable')
    return data_dir


def main(argv=None):
    """Print the environment report; raise UserError when the demo cannot run."""
    ArgumentParser(prog='python -m d2lfcn', description=(
        'Check this environment for d2lfcn: versions, devices, OpenMP threads, where '
        'VOC2012 and the pretrained weights are looked for and whether they are there. '
        'Exits 0 when the demo (python -m d2lfcn.train --demo) can run, else prints '
        'one line saying why and exits 2.')).parse_args(argv)
    print(f'd2lfcn {d2lfcn.__version__}: environment check')
    problems = []
    _report_setup(problems)
    data_dir = _report_folders(problems)
    voc_ok, voc_lines = check_voc(data_dir)
    _row('VOC2012', voc_lines)
    weights_ok, weights_lines = check_backbone()
    _row(BACKBONE, weights_lines)
    print()
    if problems:
        raise UserError('the demo cannot run: ' + '; '.join(problems))
    print('The demo can run: python -m d2lfcn.train --demo')
    if voc_ok and weights_ok:
        print("The book's recipe can run without network: python -m d2lfcn.train")
    else:
        print("The book's recipe (python -m d2lfcn.train) needs what is missing above.")


if __name__ == '__main__':
    run_cli(main)
