"""Shared pytest fixtures.

Fixtures any test file may use:

- ``small_voc_dir`` (session): the VOCdevkit/VOC2012 folder of a tiny
  synthetic dataset (``SMALL_VOC`` parameters below: 12 train + 8 val images,
  sides 48..112 px, about a quarter with one side under 64, classes
  aeroplane, bus, cat, person, potted plant). Generated once per session;
  treat it as read-only. Crops of 64x64 keep most images.
- ``small_voc_params`` (session): the parameters it was made with.
- ``small_voc_copy`` (function): a writable copy of that folder in the test's
  tmp_path, for tests that damage or edit files.

Every session also runs with $D2LFCN_DATA pointing at a fresh temporary
folder, so nothing (downloads, the demo dataset) is written to $HOME.
"""
import os
import shutil

import pytest

import d2lfcn  # noqa: F401  before any test imports mxnet: numpy 1.24+ needs d2lfcn.compat

SMALL_VOC = dict(num_train=12, num_val=8, min_size=48, max_size=112,
                 small_size=64, small_fraction=0.25, seed=1)


@pytest.fixture(scope='session', autouse=True)
def _isolated_data_dir(tmp_path_factory):
    """Point $D2LFCN_DATA at a temporary folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('D2LFCN_DATA', str(tmp_path_factory.mktemp('d2lfcn-data')))
        yield


@pytest.fixture(scope='session')
def small_voc_params():
    """Return the make_synthetic_voc parameters of `small_voc_dir`."""
    return dict(SMALL_VOC)


@pytest.fixture(scope='session')
def small_voc_dir(tmp_path_factory):
    """Return a tiny synthetic VOC2012 folder shared by the session (read-only)."""
    from d2lfcn.synthetic import make_synthetic_voc
    return make_synthetic_voc(str(tmp_path_factory.mktemp('small-voc')), **SMALL_VOC)


@pytest.fixture
def small_voc_copy(small_voc_dir, tmp_path):
    """Return a writable copy of `small_voc_dir` under tmp_path."""
    dst = os.path.join(str(tmp_path), 'VOCdevkit', 'VOC2012')
    shutil.copytree(small_voc_dir, dst)
    return dst
