"""Tests for d2lfcn/compat.py: MXNet 1.9.1 on numpy 1.24-1.26 (Python 3.12)."""
import builtins
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from d2lfcn.compat import REMOVED_ALIASES, restore_removed_aliases

ROOT = pathlib.Path(__file__).resolve().parent.parent
NEW_NUMPY = np.lib.NumpyVersion(np.__version__) >= '1.24.0'


def fake_numpy(version, **attrs):
    """Return a module object that claims to be numpy `version`."""
    module = types.ModuleType('fake_numpy')
    module.__version__ = version
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


@pytest.mark.parametrize('version', ['1.24.0', '1.26.4', '1.26.0rc1'])
def test_restores_the_removed_aliases_on_numpy_1_24_to_1_26(version):
    mine = object()
    module = fake_numpy(version, str=mine)  # an alias numpy still defines stays
    restore_removed_aliases(module)
    assert module.bool is bool and module.object is object and module.int is int
    assert module.float is float and module.complex is complex
    assert module.str is mine


@pytest.mark.parametrize('version', ['1.21.6', '1.23.5'])
def test_leaves_numpy_before_1_24_alone(version):
    module = fake_numpy(version)
    restore_removed_aliases(module)
    assert not any(hasattr(module, name) for name in REMOVED_ALIASES)


def test_refuses_numpy_2_in_one_line():
    message = r"needs numpy<2, found numpy 2\.1\.0: pip install 'numpy<2'"
    with pytest.raises(ImportError, match=message):
        restore_removed_aliases(fake_numpy('2.1.0'))


def test_the_installed_numpy_has_what_mxnet_reads():
    # The module was imported with d2lfcn (by conftest), before MXNet.
    for name in REMOVED_ALIASES:
        assert (vars(np).get(name) is getattr(builtins, name)) == NEW_NUMPY, name


def _import(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_mxnet_needs_d2lfcn_first_on_new_numpy():
    alone = _import('import mxnet')
    if NEW_NUMPY:  # MXNet's own error, as README says
        assert alone.returncode != 0
        assert "module 'numpy' has no attribute 'bool'" in alone.stderr
    else:
        assert alone.returncode == 0, alone.stderr
    first = _import('import d2lfcn, mxnet, numpy; print(numpy.__version__)')
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == [np.__version__]


@pytest.mark.parametrize('path', sorted((ROOT / 'chapters').glob('*.md')), ids=lambda p: p.name)
def test_chapters_import_d2lfcn_before_mxnet(path):
    text = path.read_text(encoding='utf-8')
    d2lfcn = re.search(r'^(import|from) d2lfcn\b', text, re.M)
    mxnet = re.search(r'^(import|from) (mxnet|gluoncv)\b', text, re.M)
    assert mxnet is None or (d2lfcn is not None and d2lfcn.start() < mxnet.start())
