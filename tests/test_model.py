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
from mxnet.gluon import nn
from mxnet.gluon.model_zoo import model_store, vision

from d2lfcn import UserError
from d2lfcn.model import (FCN, BlockConv2DTranspose, backbone_file, bilinear_kernel,
                          get_fcn, load_fcn)


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


@pytest.mark.parametrize('classes', [1000, 6])
def test_backbone_params_are_loaded(tmp_path, classes):
    """ImageNet's classifier, or one of another class count (the book's stand-in)."""
    path = tmp_path / 'r18.params'
    saved = _save_random_resnet(path, classes=classes)
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
    mx.random.seed(3)
    other = vision.resnet18_v1()  # another architecture's layers
    other.initialize(mx.init.Xavier())
    other(nd.zeros((1, 3, 32, 32)))
    other.save_parameters(str(wrong))
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
    assert str(expected) in msg and "backbone_params='PATH'" in msg
    assert 'pretrained_base=False' in msg and '\n' not in msg
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


# ------------------------------------------------------------ skip variants

ARCHS = ['fcn32s', 'fcn16s', 'fcn8s']
SKIPS = ['fcn16s', 'fcn8s']


def _bilinear_matrix(n, s):
    """Return the (s*n, n) matrix of 1-D bilinear upsampling by s, written out.

    A transposed conv with kernel 2s, stride s, padding s/2 sends input i to
    outputs j = s*i - s/2 + t (t = 0..2s-1) with the triangle weight
    1 - |t - (s - 1/2)| / s; inputs beyond the border count as zero.
    """
    M = np.zeros((s * n, n))
    for i in range(n):
        for t in range(2 * s):
            j = s * i - s // 2 + t
            if 0 <= j < s * n:
                M[j, i] = 1 - abs(t - (s - 0.5)) / s
    return M


def _upsample_ref(x, s):
    """Bilinearly upsample (C, h, w) scores by s with _bilinear_matrix, in numpy."""
    _, h, w = x.shape
    return np.einsum('Jh,chw,Kw->cJK', _bilinear_matrix(h, s), x, _bilinear_matrix(w, s))


def test_bilinear_reference_is_cv2_resize_away_from_the_border():
    x = np.random.RandomState(0).randn(1, 5, 7).astype('float32')
    for s in (2, 8, 16):
        ref = cv2.resize(x[0], (7 * s, 5 * s), interpolation=cv2.INTER_LINEAR)
        inner = np.s_[s:-s, s:-s]
        np.testing.assert_allclose(_upsample_ref(x, s)[0][inner], ref[inner], atol=1e-5)


@pytest.fixture(scope='module')
def nets():
    mx.random.seed(0)
    return {arch: get_fcn(num_classes=3, pretrained_base=False, arch=arch)
            for arch in ARCHS}


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError) as e:
        get_fcn(pretrained_base=False, arch='fcn4s')
    assert 'fcn32s, fcn16s, fcn8s' in str(e.value) and 'fcn4s' in str(e.value)


@pytest.mark.parametrize('arch', SKIPS)
@pytest.mark.parametrize('shape', [(2, 3, 64, 96), (1, 3, 32, 32), (1, 3, 96, 64),
                                   (1, 3, 160, 32)])
def test_skip_variants_return_the_input_size(nets, arch, shape):
    y = nets[arch](nd.random.uniform(shape=shape))
    assert y.shape == (shape[0], 3) + shape[2:]
    assert np.isfinite(y.asnumpy()).all()


def test_fcn32s_keeps_d2ls_layer_names(nets):
    """Checkpoints saved before the skip variants existed still load."""
    names = set(nets['fcn32s']._collect_params_with_prefix())
    assert {n for n in names if not n.startswith('features.')} == {
        'score.weight', 'score.bias', 'upsample.weight', 'upsample.bias'}
    assert isinstance(nets['fcn32s'], FCN)


@pytest.mark.parametrize('arch, stride', [('fcn16s', 16), ('fcn8s', 8)])
def test_skip_layers_start_as_the_paper_says(nets, arch, stride):
    net = nets[arch]
    tri = np.array([0.25, 0.75, 0.75, 0.25])  # 2x bilinear, by hand
    ups = ['up32to16'] + (['up16to8'] if stride == 8 else [])
    scores = ['score16'] + (['score8'] if stride == 8 else [])
    for name in ups:
        w = getattr(net, name).weight.data().asnumpy()
        assert w.shape == (3, 3, 4, 4)
        for i in range(3):
            for o in range(3):
                np.testing.assert_allclose(w[i, o], np.outer(tri, tri) * (i == o))
    for name in scores:
        assert not getattr(net, name).weight.data().asnumpy().any()
        assert not getattr(net, name).bias.data().asnumpy().any()
    w = net.upsample.weight.data().asnumpy()
    t = np.arange(2 * stride)
    tri = 1 - np.abs(t - (stride - 0.5)) / stride  # the 1-D kernel of the final layer
    np.testing.assert_allclose(w[1, 1], np.outer(tri, tri), rtol=1e-6)
    np.testing.assert_array_equal(w[0, 1], 0)


def _scores(conv, feat):
    """Apply a 1x1 conv by hand: (C, c) weights times (c, h, w) features, plus bias."""
    W = conv.weight.data().asnumpy()[:, :, 0, 0]
    return np.einsum('kc,chw->khw', W, feat) + conv.bias.data().asnumpy()[:, None, None]


def _stage_outputs(net, x):
    """Return the backbone's stride-8, -16 and -32 features of x, (c, h, w) each."""
    f8 = net.features[:7](x)
    f16 = net.features[7](f8)
    f32 = net.features[8:](f16)
    assert (f8.shape[1], f16.shape[1], f32.shape[1]) == (128, 256, 512)
    return f8[0].asnumpy(), f16[0].asnumpy(), f32[0].asnumpy()


@pytest.mark.parametrize('arch', SKIPS)
def test_untrained_skip_variant_upsamples_the_coarse_scores(nets, arch):
    """Zero skip scores: the stride-32 scores, bilinearly 2x (2x) then 16x (8x)."""
    net = nets[arch]
    x = nd.random.normal(shape=(1, 3, 128, 160))
    _, _, f32 = _stage_outputs(net, x)
    expected = _upsample_ref(_scores(net.score, f32), 2)
    if arch == 'fcn8s':
        expected = _upsample_ref(expected, 2)
    expected = _upsample_ref(expected, 16 if arch == 'fcn16s' else 8)
    np.testing.assert_allclose(net(x)[0].asnumpy(), expected, rtol=1e-4, atol=1e-4)


def _with_random_score(conv, seed):
    rng = np.random.RandomState(seed)
    old = conv.weight.data().copy(), conv.bias.data().copy()
    conv.weight.set_data(nd.array(0.05 * rng.randn(*conv.weight.shape)))
    conv.bias.set_data(nd.array(rng.randn(*conv.bias.shape)))
    return old


@pytest.mark.parametrize('arch, layer', [('fcn16s', 'score16'), ('fcn8s', 'score16'),
                                         ('fcn8s', 'score8')])
def test_a_skip_score_changes_the_output_only_through_its_path(nets, arch, layer):
    """Output(new) - output(zero skip) = that skip's scores, upsampled by hand."""
    net = nets[arch]
    x = nd.random.normal(shape=(1, 3, 64, 96))
    before = net(x)[0].asnumpy()
    f8, f16, _ = _stage_outputs(net, x)
    conv = getattr(net, layer)
    old = _with_random_score(conv, seed=len(layer))
    try:
        after = net(x)[0].asnumpy()
        delta = _scores(conv, f16 if layer == 'score16' else f8)
    finally:
        conv.weight.set_data(old[0])
        conv.bias.set_data(old[1])
    if arch == 'fcn8s' and layer == 'score16':
        delta = _upsample_ref(delta, 2)  # still passes up16to8, bilinear at start
    delta = _upsample_ref(delta, 16 if arch == 'fcn16s' else 8)
    assert np.abs(delta).max() > 0.1
    np.testing.assert_allclose(after - before, delta, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('arch, count', [('fcn16s', 63), ('fcn8s', 66)])
def test_skip_variants_give_every_parameter_a_gradient(nets, arch, count):
    net = nets[arch]
    x = nd.random.normal(shape=(2, 3, 64, 64))
    w = nd.random.normal(shape=(2, 3, 64, 64))
    with autograd.record():
        loss = (net(x) * w).sum()
    loss.backward()
    trainable = {k: p for k, p in net.collect_params().items() if p.grad_req != 'null'}
    # fcn32s's 60, plus per skip a 1x1 score (weight, bias) and a 2x upsampling.
    assert len(trainable) == count
    for name, p in trainable.items():
        g = p.grad().asnumpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0, name


@pytest.mark.parametrize('arch', SKIPS)
def test_skip_variants_hybridized_equal_imperative(arch):
    mx.random.seed(2)
    net = get_fcn(num_classes=3, pretrained_base=False, arch=arch)
    _with_random_score(net.score16, seed=1)  # let the skip path matter
    x = nd.random.normal(shape=(2, 3, 64, 96))
    with autograd.record():
        net(x)
    imperative = net(x).asnumpy()
    net.hybridize(static_alloc=True, static_shape=True)
    np.testing.assert_allclose(net(x).asnumpy(), imperative, rtol=1e-4, atol=1e-5)


def _trained_looking(arch, num_classes=3, seed=4):
    """Return an arch with nonzero skip scores, so every layer shows in its output."""
    mx.random.seed(seed)
    net = get_fcn(num_classes=num_classes, pretrained_base=False, arch=arch)
    net(nd.zeros((1, 3, 32, 32)))  # finish the backbone's deferred initialisation
    for name in ('score16', 'score8'):
        if hasattr(net, name):
            _with_random_score(getattr(net, name), seed=len(name))
    return net


@pytest.mark.parametrize('arch', ARCHS)
def test_save_and_load_each_arch(tmp_path, arch):
    net = _trained_looking(arch)
    path = tmp_path / f'{arch}.params'
    net.save_parameters(str(path))
    x = nd.random.normal(shape=(1, 3, 64, 64))
    expected = net(x).asnumpy()
    mx.random.seed(99)
    fresh = get_fcn(num_classes=3, pretrained_base=False, arch=arch)
    assert not np.allclose(fresh(x).asnumpy(), expected)
    fresh.load_parameters(str(path))
    np.testing.assert_array_equal(fresh(x).asnumpy(), expected)
    loaded = load_fcn(path, arch=arch, num_classes=3)
    assert loaded.arch == arch
    np.testing.assert_array_equal(loaded(x).asnumpy(), expected)


@pytest.mark.parametrize('arch', ARCHS)
def test_backbone_params_are_loaded_for_every_arch(tmp_path, arch):
    path = tmp_path / 'r18.params'
    saved = _save_random_resnet(path)
    net = get_fcn(num_classes=4, backbone_params=path, arch=arch)
    loaded = _features_params(net)
    assert len(loaded) == len([k for k in saved if k.startswith('features.')])
    for key, param in loaded.items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy())


@pytest.mark.parametrize('arch', SKIPS)
def test_skip_variants_take_pretrained_weights_from_the_cache(tmp_path, monkeypatch, arch):
    src, saved, stem = _fake_zoo_file(tmp_path, monkeypatch)
    monkeypatch.setenv('MXNET_HOME', str(tmp_path / 'home'))
    monkeypatch.setenv('MXNET_GLUON_REPO', _dead_url())
    os.makedirs(tmp_path / 'home' / 'models')
    os.replace(src, tmp_path / 'home' / 'models' / f'{stem}.params')
    net = get_fcn(num_classes=2, arch=arch)
    for key, param in _features_params(net).items():
        np.testing.assert_array_equal(param.data().asnumpy(), saved[key].asnumpy())
    assert not net.score16.weight.data().asnumpy().any()  # the head is still initialised


@pytest.mark.parametrize('arch', SKIPS)
def test_skip_parameters_live_on_every_context_given(arch):
    ctxs = [mx.cpu(0), mx.cpu(1)]
    net = get_fcn(num_classes=2, pretrained_base=False, ctx=ctxs, arch=arch)
    for p in net.collect_params().values():
        assert p.list_ctx() == ctxs
    x = nd.random.normal(shape=(1, 3, 32, 64))
    np.testing.assert_allclose(net(x.as_in_context(mx.cpu(1))).asnumpy(),
                               net(x).asnumpy(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- load_fcn

@pytest.fixture(scope='module')
def saved_params(tmp_path_factory):
    """One saved checkpoint per arch, 3 classes, each in its own folder."""
    paths = {}
    for arch in ARCHS:
        folder = tmp_path_factory.mktemp(arch)
        paths[arch] = str(folder / 'best.params')
        _trained_looking(arch).save_parameters(paths[arch])
    return paths


def _load_error(*args, **kwargs):
    with pytest.raises(UserError) as e:
        load_fcn(*args, **kwargs)
    assert '\n' not in str(e.value)
    return str(e.value)


def test_load_fcn_names_the_arch_and_classes_the_file_holds(saved_params):
    for held in ARCHS:
        for asked in ARCHS:
            if asked != held:
                msg = _load_error(saved_params[held], arch=asked, num_classes=3)
                assert msg == (f'params file {saved_params[held]} holds an {held}, '
                               f'not an {asked}; pass arch={held!r}')
    msg = _load_error(saved_params['fcn8s'], arch='fcn8s', num_classes=21)
    assert msg.endswith('is for 3 classes, not 21; pass num_classes=3')


def test_load_fcn_rejects_missing_corrupt_and_foreign_files(tmp_path):
    corrupt = tmp_path / 'corrupt.params'
    corrupt.write_bytes(os.urandom(300))
    resnet = tmp_path / 'resnet.params'
    _save_random_resnet(resnet)
    assert 'does not exist' in _load_error(tmp_path / 'none.params')
    assert 'corrupt' in _load_error(corrupt)
    assert 'does not hold an FCN' in _load_error(resnet)


def test_load_fcn_defaults_come_from_the_weights(saved_params):
    """Arch and class count are read off the file's layers; flags only check them."""
    path = saved_params['fcn16s']
    folder = os.path.dirname(path)
    x = nd.random.normal(shape=(1, 3, 64, 64))
    expected = load_fcn(path, 'fcn16s', 3)(x).asnumpy()
    net = load_fcn(path)
    assert net.arch == 'fcn16s' and net.score.weight.shape[0] == 3
    np.testing.assert_array_equal(net(x).asnumpy(), expected)
    assert "holds an fcn16s, not an fcn8s; pass arch='fcn16s'" in _load_error(path, arch='fcn8s')
    assert 'is for 3 classes, not 21; pass num_classes=3' in _load_error(path, num_classes=21)
    # A training run's args.json beside the weights cannot contradict them.
    with open(os.path.join(folder, 'args.json'), 'w') as f:
        f.write('{not json')
    try:
        np.testing.assert_array_equal(load_fcn(path)(x).asnumpy(), expected)
    finally:
        os.remove(os.path.join(folder, 'args.json'))


# --- BlockConv2DTranspose: MXNet's Conv2DTranspose computed as a matrix product ---

def _conv_pair(channels, in_channels, s, use_bias=True):
    """Return MXNet's Conv2DTranspose and a BlockConv2DTranspose with equal random weights."""
    kwargs = dict(kernel_size=2 * s, strides=s, padding=s // 2, in_channels=in_channels,
                  use_bias=use_bias)
    stock = nn.Conv2DTranspose(channels, **kwargs)
    block = BlockConv2DTranspose(channels, **kwargs)
    for layer in (stock, block):
        layer.initialize()
    for mine, theirs in zip(block.collect_params().values(), stock.collect_params().values()):
        theirs.set_data(nd.random.normal(shape=theirs.shape))
        mine.set_data(theirs.data())
    return stock, block


def _forward_backward(layer, x):
    x = x.copy()
    x.attach_grad()
    with autograd.record():
        y = layer(x)
        # A loss that weighs every output element differently.
        loss = (y * nd.arange(y.size).reshape(y.shape).sin()).sum()
    loss.backward()
    grads = [p.grad().asnumpy() for p in layer.collect_params().values()]
    return y.asnumpy(), x.grad.asnumpy(), grads


@pytest.mark.parametrize('channels,in_channels,s,use_bias,hybrid', [
    (21, 21, 32, True, False), (21, 21, 32, True, True), (5, 3, 8, False, True),
    (4, 6, 2, True, False), (3, 3, 16, True, True)])
def test_block_conv_transpose_equals_mxnets_outputs_and_gradients(
        channels, in_channels, s, use_bias, hybrid):
    stock, block = _conv_pair(channels, in_channels, s, use_bias)
    if hybrid:
        block.hybridize(static_alloc=True, static_shape=True)
    for shape in [(2, in_channels, 3, 5), (1, in_channels, 1, 1), (3, in_channels, 4, 2)]:
        x = nd.random.normal(shape=shape)
        want, got = _forward_backward(stock, x), _forward_backward(block, x)
        assert got[0].shape == want[0].shape == (shape[0], channels, s * shape[2],
                                                 s * shape[3])
        for w, g in zip([want[0], want[1], *want[2]], [got[0], got[1], *got[2]]):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_block_conv_transpose_runs_mxnets_code_for_other_shapes(monkeypatch):
    # Kernel 3, stride 2, padding 1 is not a 2s/s/(s/2) layer: MXNet's own code runs.
    calls = []
    original = nn.Conv2DTranspose.hybrid_forward
    monkeypatch.setattr(nn.Conv2DTranspose, 'hybrid_forward',
                        lambda self, F, x, *a, **k: calls.append(1) or original(
                            self, F, x, *a, **k))
    layer = BlockConv2DTranspose(4, kernel_size=3, strides=2, padding=1, in_channels=2)
    stock = nn.Conv2DTranspose(4, kernel_size=3, strides=2, padding=1, in_channels=2)
    layer.initialize()
    stock.initialize()
    stock.weight.set_data(layer.weight.data())
    x = nd.random.normal(shape=(1, 2, 5, 5))
    np.testing.assert_array_equal(layer(x).asnumpy(), stock(x).asnumpy())
    assert calls == [1, 1]
    # The matrix-product path does not call it.
    _, block = _conv_pair(3, 3, 4)
    block(nd.ones((1, 3, 2, 2)))
    assert calls == [1, 1]


def test_fcn_upsampling_keeps_mxnets_parameter_names_and_files(tmp_path, monkeypatch):
    from d2lfcn import model
    net = get_fcn(21, pretrained_base=False)
    assert isinstance(net.upsample, BlockConv2DTranspose)
    # The same FCN built with MXNet's own layer: every parameter named alike.
    monkeypatch.setattr(model, 'BlockConv2DTranspose', nn.Conv2DTranspose)
    stock_net = get_fcn(21, pretrained_base=False)
    assert type(stock_net.upsample) is nn.Conv2DTranspose

    def names(fcn):  # the head's, below the FCN's own prefix (the backbone's is global)
        return [k[len(fcn.prefix):] for part in (fcn.score, fcn.upsample)
                for k in part.collect_params().keys()]
    assert names(net) == names(stock_net) == ['conv0_weight', 'conv0_bias',
                                              'conv1_weight', 'conv1_bias']
    assert (list(net._collect_params_with_prefix())
            == list(stock_net._collect_params_with_prefix()))
    # Its weights are a Conv2DTranspose's: a saved file loads into MXNet's own layer.
    path = str(tmp_path / 'fcn.params')
    net(nd.zeros((1, 3, 64, 64)))  # the backbone's deferred shapes
    net.save_parameters(path)
    saved = nd.load(path)
    assert saved['upsample.weight'].shape == (21, 21, 64, 64)
    stock = nn.Conv2DTranspose(21, kernel_size=64, padding=16, strides=32, in_channels=21)
    stock.initialize()
    stock.weight.set_data(saved['upsample.weight'])
    stock.bias.set_data(saved['upsample.bias'])
    x = nd.random.normal(shape=(1, 21, 2, 3))
    np.testing.assert_allclose(net.upsample(x).asnumpy(), stock(x).asnumpy(),
                               rtol=1e-4, atol=1e-5)
