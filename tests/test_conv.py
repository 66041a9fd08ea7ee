"""Test d2lfcn.conv (and bilinear_kernel's values) against independent references.

References: the hand-computed values published in issue 2 (numbered 1-13
below), plain-numpy re-implementations written differently from the library,
Gluon's own layers, and OpenCV's resize for the bilinear-interpolation check.
"""
import matplotlib.cbook
import matplotlib.image
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, init, nd
from mxnet.gluon import nn

import d2lfcn


# ------------------------------------------------------ numpy references


def np_corr2d(X, K):
    """Slide a window over X: the textbook definition, one output at a time."""
    X, K = np.asarray(X, dtype=np.float64), np.asarray(K, dtype=np.float64)
    h, w = K.shape
    Y = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i:i + h, j:j + w] * K).sum()
    return Y


def np_trans_conv(X, K, stride=(1, 1), padding=(0, 0)):
    """Transposed conv as a plain conv: dilate X by the stride, pad by k-1-p, flip K."""
    X, K = np.asarray(X, dtype=np.float64), np.asarray(K, dtype=np.float64)
    (kh, kw), (sh, sw), (ph, pw) = K.shape, stride, padding
    dil = np.zeros(((X.shape[0] - 1) * sh + 1, (X.shape[1] - 1) * sw + 1))
    dil[::sh, ::sw] = X
    dil = np.pad(dil, ((kh - 1 - ph,) * 2, (kw - 1 - pw,) * 2))
    return np_corr2d(dil, K[::-1, ::-1])


def np_interp_matrix(n, scale):
    """(scale*n, n) matrix of 1D linear interpolation with half-pixel centres, edges clamped."""
    A = np.zeros((scale * n, n))
    for o in range(scale * n):
        src = min(max((o + 0.5) / scale - 0.5, 0), n - 1)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n - 1)
        frac = src - i0
        A[o, i0] += 1 - frac
        A[o, i1] += frac
    return A


def np_bilinear_resize(img, scale):
    """Bilinear (align_corners=False) upsampling of an (H, W, C) image."""
    Ah = np_interp_matrix(img.shape[0], scale)
    Aw = np_interp_matrix(img.shape[1], scale)
    return np.einsum('oh,hwc,pw->opc', Ah, img.astype(np.float64), Aw)


def edge_image():
    X = nd.ones((6, 8))
    X[:, 2:6] = 0
    return X


# ------------------------------------------------------- 1, 2: corr2d


def test_corr2d_published_example():  # 1
    X = nd.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    K = nd.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(d2lfcn.corr2d(X, K).asnumpy(),
                                  [[19, 25], [37, 43]])


def test_corr2d_edge_detection():  # 2
    X, K = edge_image(), nd.array([[1, -1]])
    Y = d2lfcn.corr2d(X, K).asnumpy()
    expected = np.zeros((6, 7))
    expected[:, 1], expected[:, 5] = 1, -1
    np.testing.assert_array_equal(Y, expected)
    np.testing.assert_array_equal(d2lfcn.corr2d(X.T, K).asnumpy(),
                                  np.zeros((8, 5)))


def test_corr2d_matches_numpy_on_random_shapes():
    rng = np.random.default_rng(0)
    for xs, ks in [((7, 9), (3, 2)), ((5, 5), (5, 5)), ((4, 6), (1, 1))]:
        X, K = rng.normal(size=xs), rng.normal(size=ks)
        Y = d2lfcn.corr2d(nd.array(X, dtype='float64'), nd.array(K, dtype='float64'))
        np.testing.assert_allclose(Y.asnumpy(), np_corr2d(X, K), rtol=1e-12)


# -------------------------------------------- 3: learning the edge kernel


def test_gluon_conv2d_learns_the_edge_kernel():  # 3
    mx.random.seed(0)
    X = edge_image().reshape((1, 1, 6, 8))
    Y = nd.array(np_corr2d(X[0, 0].asnumpy(), [[1, -1]])).reshape((1, 1, 6, 7))
    conv2d = nn.Conv2D(1, kernel_size=(1, 2), use_bias=False)
    conv2d.initialize()
    losses = []
    for _ in range(10):
        with autograd.record():
            loss = ((conv2d(X) - Y) ** 2).sum()
        loss.backward()
        conv2d.weight.data()[:] -= 3e-2 * conv2d.weight.grad()
        losses.append(loss.asscalar())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    np.testing.assert_allclose(conv2d.weight.data().reshape((2,)).asnumpy(),
                               [1, -1], atol=0.05)


def test_scratch_conv2d_forward_and_gradient_match_numpy():
    mx.random.seed(1)
    X, Y = edge_image(), nd.array(np_corr2d(edge_image().asnumpy(), [[1, -1]]))
    conv2d = d2lfcn.Conv2D(kernel_size=(1, 2))
    conv2d.initialize()
    k = conv2d.weight.data().asnumpy()
    b = conv2d.bias.data().asnumpy()
    with autograd.record():
        out = conv2d(X)
        loss = ((out - Y) ** 2).sum()
    loss.backward()
    ref = np_corr2d(X.asnumpy(), k) + b
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-6)
    # d loss / d K[a, b] = 2 * sum(err * X shifted by (a, b)); d loss / d bias = 2 * sum(err).
    err = ref - Y.asnumpy()
    Xn = X.asnumpy()
    grad_k = [[2 * (err * Xn[0:6, c:c + 7]).sum() for c in range(2)]]
    np.testing.assert_allclose(conv2d.weight.grad().asnumpy(), grad_k, rtol=1e-4)
    np.testing.assert_allclose(conv2d.bias.grad().asnumpy(), [2 * err.sum()],
                               rtol=1e-4)


def test_scratch_conv2d_learns_the_edge_kernel_with_smaller_lr():
    # With a bias the loss is steeper (each of the 42 outputs feeds it), so
    # lr 3e-2 diverges; 1e-2 over 40 steps converges.
    mx.random.seed(0)
    X = edge_image()
    Y = nd.array(np_corr2d(X.asnumpy(), [[1, -1]]))
    conv2d = d2lfcn.Conv2D(kernel_size=(1, 2))
    conv2d.initialize()
    for _ in range(40):
        with autograd.record():
            loss = ((conv2d(X) - Y) ** 2).sum()
        loss.backward()
        for param in (conv2d.weight, conv2d.bias):
            param.data()[:] -= 1e-2 * param.grad()
    np.testing.assert_allclose(conv2d.weight.data().asnumpy(), [[1, -1]], atol=0.05)
    assert abs(conv2d.bias.data().asscalar()) < 0.05


# ------------------------------------------------- 4: padding and stride


@pytest.mark.parametrize('kwargs, shape', [
    (dict(kernel_size=3, padding=1), (8, 8)),
    (dict(kernel_size=(5, 3), padding=(2, 1)), (8, 8)),
    (dict(kernel_size=3, padding=1, strides=2), (4, 4)),
    (dict(kernel_size=(3, 5), padding=(0, 0), strides=(3, 4)), (2, 1)),
    (dict(kernel_size=(3, 5), padding=(0, 1), strides=(3, 4)), (2, 2)),
])
def test_padding_and_stride_shapes(kwargs, shape):  # 4
    X = nd.random.uniform(shape=(8, 8))
    assert d2lfcn.comp_conv2d(nn.Conv2D(1, **kwargs), X).shape == shape
    assert d2lfcn.conv_output_shape((8, 8), **kwargs) == shape


def test_conv_output_shape_agrees_with_gluon_and_accepts_ints():
    X = nd.zeros((1, 1, 13, 10))
    for k, s, p in [(1, 1, 0), (3, 2, 1), ((4, 2), (3, 1), (2, 0)), (7, 5, 3)]:
        out = nn.Conv2D(1, kernel_size=k, strides=s, padding=p)
        out.initialize()
        assert d2lfcn.conv_output_shape((13, 10), k, s, p) == out(X).shape[2:]
    assert d2lfcn.conv_output_shape(8, 3, strides=2, padding=1) == 4
    assert d2lfcn.conv_output_shape([8, 6], 3) == (6, 4)
    with pytest.raises(ValueError):
        d2lfcn.conv_output_shape((8, 8), (3, 3, 3))


# ------------------------------------------------------ 5: channels


def two_channel_example():
    X = nd.array([[[0, 1, 2], [3, 4, 5], [6, 7, 8]],
                  [[1, 2, 3], [4, 5, 6], [7, 8, 9]]])
    K = nd.array([[[0, 1], [2, 3]], [[1, 2], [3, 4]]])
    return X, K


def test_corr2d_multi_in_published_example():  # 5
    X, K = two_channel_example()
    np.testing.assert_array_equal(d2lfcn.corr2d_multi_in(X, K).asnumpy(),
                                  [[56, 72], [104, 120]])


def test_corr2d_multi_in_out_published_example():  # 5
    X, K = two_channel_example()
    K3 = nd.stack(K, K + 1, K + 2)
    assert K3.shape == (3, 2, 2, 2)
    np.testing.assert_array_equal(
        d2lfcn.corr2d_multi_in_out(X, K3).asnumpy(),
        [[[56, 72], [104, 120]], [[76, 100], [148, 172]],
         [[96, 128], [192, 224]]])


def test_corr2d_multi_in_out_matches_numpy_and_1x1_matches_it():  # 5
    rng = np.random.default_rng(2)
    X = nd.array(rng.normal(size=(3, 3, 3)))
    K = nd.array(rng.normal(size=(2, 3, 1, 1)))
    Y1 = d2lfcn.corr2d_multi_in_out_1x1(X, K)
    Y2 = d2lfcn.corr2d_multi_in_out(X, K)
    assert Y1.shape == (2, 3, 3)
    np.testing.assert_allclose(Y1.asnumpy(), Y2.asnumpy(), rtol=1e-5, atol=1e-6)
    # numpy: output channel o is the sum over input channels of their corr2d.
    X, K = rng.normal(size=(3, 5, 6)), rng.normal(size=(4, 3, 2, 3))
    ref = np.stack([sum(np_corr2d(X[c], K[o, c]) for c in range(3))
                    for o in range(4)])
    np.testing.assert_allclose(
        d2lfcn.corr2d_multi_in_out(nd.array(X), nd.array(K)).asnumpy(), ref,
        rtol=1e-4, atol=1e-5)


# ------------------------------------------- 6, 9: convolution as a matrix


def test_conv_as_sparse_matrix_4x4():  # 6
    K = nd.arange(1, 10).reshape((3, 3))
    X = nd.arange(1, 17).reshape((1, 1, 4, 4))
    conv = nn.Conv2D(1, kernel_size=3, use_bias=False)
    conv.initialize(init.Constant(K.reshape((1, 1, 3, 3))))
    expected = [[348, 393], [528, 573]]
    np.testing.assert_array_equal(conv(X)[0, 0].asnumpy(), expected)
    W = d2lfcn.kernel2matrix(K, (4, 4))
    assert W.shape == (4, 16)
    assert d2lfcn.kernel2matrix(K, 4).shape == (4, 16)  # int: a square input
    np.testing.assert_array_equal(nd.dot(W, X.reshape((16,))).asnumpy(),
                                  np.ravel(expected))


def test_kernel2matrix_published_3x3_example():  # 9
    X = nd.arange(9).reshape((3, 3))
    K = nd.array([[1, 2], [3, 4]])
    Y = d2lfcn.corr2d(X, K)
    np.testing.assert_array_equal(Y.asnumpy(), [[27, 37], [57, 67]])
    W = d2lfcn.kernel2matrix(K)
    assert W.shape == (4, 9)
    np.testing.assert_array_equal(W.asnumpy(), [
        [1, 2, 0, 3, 4, 0, 0, 0, 0], [0, 1, 2, 0, 3, 4, 0, 0, 0],
        [0, 0, 0, 1, 2, 0, 3, 4, 0], [0, 0, 0, 0, 1, 2, 0, 3, 4]])
    np.testing.assert_array_equal(nd.dot(W, X.reshape((-1,))).asnumpy(),
                                  [27, 37, 57, 67])
    Z = d2lfcn.trans_conv(Y, K)
    np.testing.assert_array_equal(Z.asnumpy().ravel(),
                                  nd.dot(W.T, Y.reshape((-1,))).asnumpy())


def test_kernel2matrix_columns_are_responses_to_unit_inputs():
    # Column m of W is corr2d of the m-th one-hot image, for any shape/stride.
    rng = np.random.default_rng(3)
    for shape, ks, stride in [((5, 7), (3, 2), 1), ((6, 6), (2, 2), 2),
                              ((7, 5), (3, 3), (2, 1))]:
        K = rng.normal(size=ks)
        W = d2lfcn.kernel2matrix(nd.array(K), shape, strides=stride).asnumpy()
        sh, sw = (stride, stride) if np.isscalar(stride) else stride
        cols = []
        for m in range(shape[0] * shape[1]):
            e = np.zeros(shape)
            e.flat[m] = 1
            cols.append(np_corr2d(e, K)[::sh, ::sw].ravel())
        np.testing.assert_allclose(W, np.stack(cols, axis=1), rtol=1e-6)


def test_transposed_conv_is_w_transpose_with_strides():
    # Strided transposed conv (what FCN upsamples with) is W^T of strided conv.
    rng = np.random.default_rng(4)
    K, Y = rng.normal(size=(4, 4)), rng.normal(size=(3, 3))
    W = d2lfcn.kernel2matrix(nd.array(K), (8, 8), strides=2).asnumpy()
    Z = d2lfcn.trans_conv(nd.array(Y), nd.array(K), strides=2).asnumpy()
    np.testing.assert_allclose(Z.ravel(), W.T @ Y.ravel(), rtol=1e-4, atol=1e-5)


# --------------------------------------------- 7, 10: shape inversion


def test_transposed_conv_inverts_conv_shapes():  # 7
    X = nd.random.uniform(shape=(1, 3, 64, 64))
    conv = nn.Conv2D(10, kernel_size=4, padding=1, strides=2)
    tconv = nn.Conv2DTranspose(3, kernel_size=4, padding=1, strides=2)
    conv.initialize()
    tconv.initialize()
    assert conv(X).shape == (1, 10, 32, 32)
    assert tconv(conv(X)).shape == (1, 3, 64, 64)
    assert d2lfcn.conv_output_shape((64, 64), 4, 2, 1) == (32, 32)
    assert d2lfcn.transposed_conv_output_shape((32, 32), 4, 2, 1) == (64, 64)

    X = nd.random.uniform(shape=(1, 10, 16, 16))
    conv = nn.Conv2D(20, kernel_size=5, padding=2, strides=3)
    tconv = nn.Conv2DTranspose(10, kernel_size=5, padding=2, strides=3)
    conv.initialize()
    tconv.initialize()
    assert tconv(conv(X)).shape == X.shape
    assert d2lfcn.transposed_conv_output_shape(
        d2lfcn.conv_output_shape(16, 5, 3, 2), 5, 3, 2) == 16


def test_same_padding_upsampling_with_output_padding():  # 10
    X = nd.random.uniform(shape=(1, 1, 3, 3))
    tconv = nn.Conv2DTranspose(1, kernel_size=1, strides=2, output_padding=1)
    tconv.initialize()
    assert tconv(X).shape == (1, 1, 6, 6)
    assert d2lfcn.transposed_conv_output_shape(3, 1, 2, output_padding=1) == 6


def test_transposed_conv_output_shape_agrees_with_gluon():
    X = nd.zeros((1, 1, 5, 7))
    for k, s, p, o in [(2, 1, 0, 0), (4, 2, 1, 0), ((3, 5), (3, 2), (1, 2), (2, 1)),
                       (64, 32, 16, 0)]:
        layer = nn.Conv2DTranspose(1, kernel_size=k, strides=s, padding=p,
                                   output_padding=o)
        layer.initialize()
        assert d2lfcn.transposed_conv_output_shape((5, 7), k, s, p, o) == \
            layer(X).shape[2:]


# ------------------------------------------------------ 8: trans_conv


def test_trans_conv_published_examples():  # 8
    X = nd.array([[0, 1], [2, 3]])
    K = nd.array([[0, 1], [2, 3]])
    expected = [[0, 0, 1], [0, 4, 6], [4, 12, 9]]
    np.testing.assert_array_equal(d2lfcn.trans_conv(X, K).asnumpy(), expected)
    X4, K4 = X.reshape((1, 1, 2, 2)), K.reshape((1, 1, 2, 2))
    for kwargs, want in [
            ({}, expected),
            (dict(padding=1), [[4]]),
            (dict(strides=2), [[0, 0, 0, 1], [0, 0, 2, 3], [0, 2, 0, 3],
                               [4, 6, 6, 9]])]:
        tconv = nn.Conv2DTranspose(1, kernel_size=2, **kwargs)
        tconv.initialize(init.Constant(K4))
        np.testing.assert_array_equal(tconv(X4)[0, 0].asnumpy(), want)
        np.testing.assert_array_equal(d2lfcn.trans_conv(X, K, **kwargs).asnumpy(),
                                      want)


def test_trans_conv_matches_numpy_dilated_conv():
    rng = np.random.default_rng(5)
    for xs, ks, s, p in [((3, 4), (2, 3), (1, 1), (0, 0)),
                         ((4, 3), (4, 4), (2, 2), (1, 1)),
                         ((2, 2), (3, 3), (3, 3), (1, 1)),
                         ((3, 4), (3, 4), (2, 3), (0, 1))]:
        X, K = rng.normal(size=xs), rng.normal(size=ks)
        ours = d2lfcn.trans_conv(nd.array(X), nd.array(K), strides=s, padding=p)
        np.testing.assert_allclose(ours.asnumpy(), np_trans_conv(X, K, s, p),
                                   rtol=1e-4, atol=1e-5)


WORKED_X = [[1, 2], [3, 4]]
WORKED_K = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
# 2x2 input, 3x3 kernel, stride 2, padding 1, output padding 1, summed by hand:
# copies 1K, 2K, 3K, 4K two apart on a 5x5 grid; padding cuts the first row
# and column, output padding keeps the last ones.
WORKED_Y = [[4, 11, 8, 10], [10, 26, 18, 24], [12, 27, 16, 20], [21, 48, 28, 32]]


def gluon_trans_conv(X, K, s, p, o):
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    layer = nn.Conv2DTranspose(1, kernel_size=K.shape, strides=s, padding=p,
                               output_padding=o, use_bias=False)
    layer.initialize(init.Constant(nd.array(K).reshape((1, 1) + K.shape)))
    return layer(nd.array(X).reshape((1, 1) + X.shape))[0, 0].asnumpy()


def test_trans_conv_worked_example_2x2_to_4x4():
    args = dict(strides=2, padding=1, output_padding=1)
    assert d2lfcn.transposed_conv_output_shape(2, 3, **args) == 4  # (2-1)*2 - 2 + 3 + 1
    ours = d2lfcn.trans_conv(nd.array(WORKED_X), nd.array(WORKED_K), **args).asnumpy()
    np.testing.assert_array_equal(ours, WORKED_Y)
    np.testing.assert_array_equal(gluon_trans_conv(WORKED_X, WORKED_K, 2, 1, 1), WORKED_Y)
    # Without output padding the last row and column go as well: both 3 and 4
    # are what a stride-2 convolution maps to 2.
    np.testing.assert_array_equal(
        d2lfcn.trans_conv(nd.array(WORKED_X), nd.array(WORKED_K), 2, 1).asnumpy(),
        np.array(WORKED_Y)[:3, :3])


def test_trans_conv_output_padding_matches_gluon():
    rng = np.random.default_rng(10)
    for xs, ks, s, p, o in [((3, 4), (3, 3), (2, 2), (1, 1), (1, 1)),
                            ((2, 3), (4, 2), (3, 2), (1, 0), (2, 1)),
                            ((3, 3), (2, 2), (2, 2), (0, 0), (1, 1))]:
        X, K = rng.normal(size=xs), rng.normal(size=ks)
        ours = d2lfcn.trans_conv(nd.array(X), nd.array(K), s, p, o).asnumpy()
        np.testing.assert_allclose(ours, gluon_trans_conv(X, K, s, p, o), rtol=1e-4,
                                   atol=1e-5)


def test_stretch_input_worked_example_by_hand():
    Z = d2lfcn.stretch_input(nd.array(WORKED_X), 3, strides=2, padding=1,
                             output_padding=1).asnumpy()
    want = np.zeros((6, 6))
    want[1, 1], want[1, 3], want[3, 1], want[3, 3] = 1, 2, 3, 4  # 1 zero between, 1 around
    np.testing.assert_array_equal(Z, want)
    flipped = nd.array(np.flip(WORKED_K))  # both axes
    np.testing.assert_array_equal(d2lfcn.corr2d(nd.array(Z), flipped).asnumpy(), WORKED_Y)


def test_stretch_input_then_stride_1_conv_is_the_transposed_conv():
    # Fractionally strided: against Gluon, for paddings below, at and above k - 1.
    rng = np.random.default_rng(11)
    for xs, ks, s, p, o in [((3, 4), (3, 2), (2, 3), (1, 0), (1, 2)),
                            ((4, 3), (4, 4), (2, 2), (1, 1), (0, 0)),
                            ((3, 3), (2, 3), (3, 1), (1, 2), (2, 0)),
                            ((4, 4), (3, 3), (2, 2), (3, 3), (1, 1))]:
        X, K = rng.normal(size=xs), rng.normal(size=ks)
        Z = d2lfcn.stretch_input(nd.array(X), ks, s, p, o)
        Y = d2lfcn.corr2d(Z, nd.array(np.flip(K)))
        np.testing.assert_allclose(Y.asnumpy(), gluon_trans_conv(X, K, s, p, o),
                                   rtol=1e-4, atol=1e-5)


# ------------------------------------------- 11: bilinear upsampling


def test_bilinear_kernel_values():  # 11
    row = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(d2lfcn.bilinear_kernel(1, 1, 4)[0, 0].asnumpy(),
                               np.outer(row, row))
    W = d2lfcn.bilinear_kernel(3, 3, 4).asnumpy()
    assert W.shape == (3, 3, 4, 4)
    for i in range(3):
        for o in range(3):
            want = np.outer(row, row) if i == o else np.zeros((4, 4))
            np.testing.assert_allclose(W[i, o], want)
    # Odd size 3: the tent 1 - |x - 1| / 2 peaks at the centre.
    np.testing.assert_allclose(d2lfcn.bilinear_kernel(1, 1, 3)[0, 0].asnumpy(),
                               np.outer([.5, 1, .5], [.5, 1, .5]))


def test_numpy_bilinear_reference_agrees_with_opencv():
    # Validates the reference itself against a third implementation.
    import cv2
    img = np.random.default_rng(6).uniform(0, 255, size=(7, 9, 3)).astype(np.float32)
    ref = np_bilinear_resize(img, 2)
    cv = cv2.resize(img, (18, 14), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ref, cv, rtol=1e-4, atol=1e-3)


@pytest.fixture(scope='module')
def photo():
    """A 96x80 crop of matplotlib's Grace Hopper photo, as (H, W, 3) uint8."""
    with matplotlib.cbook.get_sample_data('grace_hopper.jpg') as f:
        img = matplotlib.image.imread(f, format='jpg')
    return img[100:196, 200:280]


def test_bilinear_conv2dtranspose_doubles_photo_like_bilinear_interpolation(photo):  # 11
    tconv = nn.Conv2DTranspose(3, kernel_size=4, padding=1, strides=2)
    tconv.initialize(init.Constant(d2lfcn.bilinear_kernel(3, 3, 4)))
    X = nd.array(photo).astype('float32').transpose((2, 0, 1)).expand_dims(0) / 255
    Y = tconv(X)[0].transpose((1, 2, 0)).asnumpy()
    H, W = photo.shape[:2]
    assert Y.shape == (2 * H, 2 * W, 3)
    ref = np_bilinear_resize(photo / 255, 2)
    # Border pixels differ: interpolation clamps, the transposed conv sees zeros.
    np.testing.assert_allclose(Y[1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-5)
    assert not np.allclose(Y[0], ref[0], atol=1e-3)


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_upsample_bilinear_matches_interpolation(photo, scale):
    img = photo[:20, :24]
    Y = d2lfcn.upsample_bilinear(img, scale)
    assert Y.shape == (scale * 20, scale * 24, 3)
    assert Y.dtype == np.float32
    ref = np_bilinear_resize(img, scale)
    s = scale
    np.testing.assert_allclose(Y.asnumpy()[s:-s, s:-s], ref[s:-s, s:-s],
                               rtol=1e-5, atol=1e-3)


def test_bilinear_upsampler_layer_shape():
    layer = d2lfcn.bilinear_upsampler(21, scale=32)
    assert layer(nd.zeros((1, 21, 2, 3))).shape == (1, 21, 64, 96)


# ----------------------------------------------- 12: Dense -> 1x1 conv


def np_dense_per_pixel(X, weight, bias):
    """out[n, :, h, w] = weight @ X[n, :, h, w] + bias, with explicit loops."""
    N, C, H, W = X.shape
    out = np.zeros((N, weight.shape[0], H, W))
    for n in range(N):
        for h in range(H):
            for w in range(W):
                out[n, :, h, w] = weight @ X[n, :, h, w] + bias
    return out


def test_conv1x1_and_dense_published_example():  # 12
    NUM_OUTPUTS = 2
    mx.random.seed(7)
    X = nd.random.normal(shape=(1, 1, 2, 2))
    conv = nn.Conv2D(NUM_OUTPUTS, kernel_size=1)
    conv.initialize()
    dense = nn.Dense(NUM_OUTPUTS)
    dense.initialize(init.Normal(1))
    assert conv(X).shape == (1, 2, 2, 2)
    assert d2lfcn.dense_per_pixel(dense, X).shape == (1, 2, 2, 2)
    # Same shapes but different functions, until the weights are transferred.
    assert not np.allclose(conv(X).asnumpy(), d2lfcn.dense_per_pixel(dense, X).asnumpy())
    dense.bias.set_data(nd.array([0.5, -1.0]))
    conv = d2lfcn.dense_to_conv1x1(dense)
    ref = np_dense_per_pixel(X.asnumpy(), dense.weight.data().asnumpy(),
                             dense.bias.data().asnumpy())
    np.testing.assert_allclose(conv(X).asnumpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d2lfcn.dense_per_pixel(dense, X).asnumpy(), ref,
                               rtol=1e-5, atol=1e-6)


def test_dense_to_conv1x1_many_channels_activation_and_no_bias():
    mx.random.seed(8)
    X = nd.random.normal(shape=(2, 3, 4, 5))
    for kwargs in (dict(activation='relu'), dict(use_bias=False)):
        dense = nn.Dense(4, in_units=3, **kwargs)
        dense.initialize(init.Normal(1))
        if dense.bias is not None:
            dense.bias.set_data(nd.array([0.1, -0.2, 0.3, -0.4]))
        conv = d2lfcn.dense_to_conv1x1(dense)
        assert isinstance(conv, nn.Conv2D)
        bias = dense.bias.data().asnumpy() if dense.bias is not None else 0
        ref = np_dense_per_pixel(X.asnumpy(), dense.weight.data().asnumpy(), bias)
        if 'activation' in kwargs:
            ref = np.maximum(ref, 0)
        np.testing.assert_allclose(conv(X).asnumpy(), ref, rtol=1e-5, atol=1e-6)
        # The copy is independent: training the conv later leaves the Dense alone.
        conv.weight.data()[:] = 0
        assert np.abs(dense.weight.data().asnumpy()).sum() > 0


def test_dense_to_conv1x1_needs_known_input_size():
    dense = nn.Dense(2)
    dense.initialize()
    with pytest.raises(ValueError, match='in_units'):
        d2lfcn.dense_to_conv1x1(dense)


# --------------------------------------------------- 13: class softmax


def test_class_softmax():  # 13
    scores = nd.array(np.random.default_rng(9).normal(scale=5, size=(2, 21, 6, 7)))
    P = d2lfcn.class_softmax(scores).asnumpy()
    S = scores.asnumpy().astype(np.float64)
    ref = np.exp(S - S.max(axis=1, keepdims=True))
    ref /= ref.sum(axis=1, keepdims=True)
    assert P.shape == S.shape
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(P.argmax(axis=1), S.argmax(axis=1))
    np.testing.assert_allclose(P, ref, rtol=1e-4, atol=1e-7)


def test_class_softmax_is_stable_for_large_scores():
    P = d2lfcn.class_softmax(nd.array([[[[1000.]], [[0.]], [[-1000.]]]])).asnumpy()
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P.ravel(), [1, 0, 0], atol=1e-6)



def test_receptive_field_equals_the_input_gradient_support():
    """Backprop one output element through positive weights: its support is the field."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(1, 3, padding=1, use_bias=False), nn.Conv2D(1, 3, strides=2, padding=1,
                                                                  use_bias=False),
            nn.AvgPool2D(2, 2), nn.Conv2D(1, 5, padding=2, use_bias=False),
            nn.Conv2D(1, 3, strides=2, dilation=2, padding=2, use_bias=False))
    net.initialize(init.Constant(1.0))
    fields = d2lfcn.receptive_field(d2lfcn.conv_layers(net))
    assert fields == [(3, 1, 0.0), (5, 2, 0.0), (7, 4, 1.0), (23, 4, 1.0), (39, 8, 1.0)]
    X = nd.ones((1, 1, 96, 96))
    X.attach_grad()
    with autograd.record():
        Y = net(X)
        j = Y.shape[2] // 2
        element = Y[0, 0, j, j]
    element.backward()
    rows = np.flatnonzero(X.grad[0, 0].asnumpy().sum(axis=1))
    size, jump, start = fields[-1]
    assert rows[-1] - rows[0] + 1 == size
    assert (rows[0] + rows[-1]) / 2 == start + j * jump


def test_resnet18_receptive_fields_grow_to_435_pixels():
    from mxnet.gluon.model_zoo import vision
    features = vision.resnet18_v2().features
    fields = [d2lfcn.receptive_field(d2lfcn.conv_layers(features[:i + 1]))[-1][:2]
              for i in range(5, 9)]
    assert fields == [(43, 4), (99, 8), (211, 16), (435, 32)]  # stages 1 to 4
