"""Test the FCN model: shapes, gradients, initialisation and weight loading."""
import hashlib
import http.server
import os
import socket
import threading
import zipfile

import cv2
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, nd
from mxnet.gluon.model_zoo import model_store, vision

from d2lfcn import UserError
from d2lfcn.model import FCN, backbone_file, bilinear_kernel, get_fcn


@pytest.fixture(scope='module')
def net():
    mx.random.seed(0)
    return get_fcn(num_classes=5, pretrained_base=False)


def test_d2l_shapes():
    """The book's numbers: (1,3,320,480) -> (1,512,10,15) -> (1,21,320,480)."""
    net = get_fcn(pretrained_base=False)
    x = nd.random.uniform(shape=(1, 3, 320, 480))
    assert net.features(x).shape == (1, 512, 10, 15)
    assert net(x).shape == (1, 21, 320, 480)


@pytest.mark.parametrize('shape', [(2, 3, 64, 96), (1, 3, 32, 32), (1, 3, 96, 64)])
def test_multiples_of_32_come_back_unchanged(net, shape):
    y = net(nd.random.uniform(shape=shape))
    assert y.shape == (shape[0], 5) + shape[2:]
    assert np.isfinite(y.asnumpy()).all()


def test_every_parameter_gets_a_gradient(net):
    x = nd.random.normal(shape=(2, 3, 64, 64))
    w = nd.random.normal(shape=(2, 5, 64, 64))
    with autograd.record():
        loss = (net(x) * w).sum()
    loss.backward()
    assert np.isfinite(loss.asscalar())
    trainable = {k: p for k, p in net.collect_params().items()
                 if p.grad_req != 'null'}
    # 22 conv/deconv weights + 2 biases + 2 x 18 affine BatchNorms.
    assert len(trainable) == 60
    for name, p in trainable.items():
        g = p.grad().asnumpy()
        assert np.isfinite(g).all(), name
        assert np.abs(g).max() > 0, name


def test_upsample_is_initialised_with_bilinear_kernel(net):
    w = net.upsample.weight.data().asnumpy()
    np.testing.assert_array_equal(w, bilinear_kernel(5, 5, 64).asnumpy())
    np.testing.assert_array_equal(net.upsample.bias.data().asnumpy(), 0)


def test_score_and_upsample_match_cv2_bilinear_resize(net):
    """1x1 conv = per-pixel matrix product; the transposed conv = bilinear resize.

    cv2.resize(INTER_LINEAR) uses half-pixel centres, as the 64/32/16 transposed
    conv does; they differ only within 16 pixels of the border, where cv2
    replicates the edge and the transposed conv sees zeros.
    """
    rng = np.random.RandomState(0)
    h, w = 4, 6
    feat = rng.randn(1, 512, h, w).astype('float32')
    W = net.score.weight.data().asnumpy()[:, :, 0, 0]  # (5, 512), Xavier
    b = rng.randn(5).astype('float32')
    net.score.bias.set_data(nd.array(b))
    try:
        out = net.upsample(net.score(nd.array(feat))).asnumpy()[0]
    finally:
        net.score.bias.set_data(nd.zeros(5))
    scores = np.einsum('kc,chw->khw', W, feat[0]) + b[:, None, None]
    assert out.shape == (5, 32 * h, 32 * w)
    inner = np.s_[16:32 * h - 16, 16:32 * w - 16]
    for k in range(5):
        ref = cv2.resize(scores[k], (32 * w, 32 * h), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(out[k][inner], ref[inner], rtol=1e-4, atol=1e-4)
    # Sanity of the comparison itself: the border really does differ.
    assert not np.allclose(out[0][:16], cv2.resize(
        scores[0], (32 * w, 32 * h), interpolation=cv2.INTER_LINEAR)[:16], atol=1e-3)


def test_hybridized_equals_imperative():
    mx.random.seed(1)
    net = get_fcn(num_classes=3, pretrained_base=False)
    x = nd.random.normal(shape=(2, 3, 64, 64))
    with autograd.record():  # train mode: update BN running stats away from 0/1
        net(x)
    imperative = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    hybrid = net(x).asnumpy()
    np.testing.assert_allclose(hybrid, imperative, rtol=1e-4, atol=1e-5)


def _features_params(net):
    return {k: v for k, v in net._collect_params_with_prefix().items()
            if k.startswith('features.')}


def _save_random_resnet(path, seed=3, **kwargs):
    mx.random.seed(seed)
    base = vision.resnet18_v2(**kwargs)
    base.initialize(mx.init.Xavier())
    base(nd.zeros((1, 3, 32, 32)))
    base.save_parameters(str(path))
    return nd.load(str(path))


def test_backbone_params_are_loaded(tmp_path):
    path = tmp_path / 'r18.params'
    saved = _save_random_resnet(path)
    net = get_fcn(num_classes=4, backbone_params=path)
    loaded = _features_params(net)
    assert len(loaded) == len([k for k in saved if k.startswith('features.')]) > 80
    for key, param in loaded.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy())


def test_bad_backbone_params_name_the_file(tmp_path):
    missing = tmp_path / 'nope.params'
    corrupt = tmp_path / 'corrupt.params'
    corrupt.write_bytes(os.urandom(1000))
    wrong = tmp_path / 'wrong.params'
    _save_random_resnet(wrong, classes=10)  # output layer 10 classes, not 1000
    for path in (missing, corrupt, wrong):
        with pytest.raises(UserError) as e:
            get_fcn(backbone_params=path)
        assert str(path) in str(e.value) and '\n' not in str(e.value)


def _dead_url():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/'  # closed again: connections are refused


def test_offline_pretrained_says_where_to_put_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('MXNET_HOME', str(tmp_path))
    monkeypatch.setenv('MXNET_GLUON_REPO', _dead_url())
    with pytest.raises(UserError) as e:
        get_fcn(num_classes=2)
    msg = str(e.value)
    expected = tmp_path / 'models' / 'resnet18_v2-a81db45f.params'
    assert backbone_file() == str(expected)
    assert str(expected) in msg and '--backbone-params' in msg
    assert '--no-pretrained-base' in msg and '\n' not in msg
    assert not expected.exists()
    assert 'retrying' not in capsys.readouterr().out  # the zoo's retry chatter is hidden


def _fake_zoo_file(tmp_path, monkeypatch):
    """Make the model zoo expect a randomly initialised resnet18_v2 we saved."""
    src = tmp_path / 'src.params'
    saved = _save_random_resnet(src, seed=5)
    sha1 = hashlib.sha1(src.read_bytes()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, 'resnet18_v2', sha1)
    return src, saved, f'resnet18_v2-{sha1[:8]}'


def test_pretrained_weights_come_from_the_mxnet_home_cache(tmp_path, monkeypatch):
    src, saved, stem = _fake_zoo_file(tmp_path, monkeypatch)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'home'))
    monkeypatch.setenv('MXNET_GLUON_REPO', _dead_url())
    os.makedirs(tmp_path / 'home' / 'models')
    os.replace(src, tmp_path / 'home' / 'models' / f'{stem}.params')
    net = get_fcn(num_classes=2)
    for key, param in _features_params(net).items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy())


def test_pretrained_weights_are_downloaded_from_the_gluon_repo(tmp_path, monkeypatch):
    src, saved, stem = _fake_zoo_file(tmp_path, monkeypatch)
    repo = tmp_path / 'repo'
    os.makedirs(repo / 'gluon' / 'models')
    with zipfile.ZipFile(repo / 'gluon' / 'models' / f'{stem}.zip', 'w') as zf:
        zf.write(src, f'{stem}.params')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(repo), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'home'))
        monkeypatch.setenv('MXNET_GLUON_REPO', f'http://127.0.0.1:{server.server_port}/')
        net = get_fcn(num_classes=2)
    finally:
        server.shutdown()
        server.server_close()
    assert os.path.exists(tmp_path / 'home' / 'models' / f'{stem}.params')
    for key, param in _features_params(net).items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy())


def test_parameters_live_on_every_context_given():
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net = get_fcn(num_classes=2, pretrained_base=False, ctx=ctxs)
    for p in net.collect_params().values():
        assert p.list_ctx() == ctxs
    np.testing.assert_array_equal(net.upsample.weight.data(mx.cpu(1)).asnumpy(),
                                  bilinear_kernel(2, 2, 64).asnumpy())
