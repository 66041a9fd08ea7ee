"""Draw transposed convolutions: kernel copies, a stretched input, a matrix, upsampling.

The numbers drawn come from the library (`trans_conv`, `stretch_input`,
`kernel2matrix`, `upsample_bilinear`), so a figure cannot drift from the
code it shows. Explained in chapters/transposed-conv.md.
"""
import numpy as np
from mxnet import nd

from ..conv import (conv_output_shape, kernel2matrix, stretch_input, trans_conv,
                    upsample_bilinear)
from .canvas import PALETTE, canvas, fmt, grid, pair, pyplot, sample_photo
from .convolution import draw_conv

__all__ = ['draw_trans_conv', 'draw_trans_conv_as_conv', 'draw_conv_as_matrix',
           'draw_bilinear_upsampling']


def draw_trans_conv(X=((0, 1), (2, 3)), K=((0, 1), (2, 3)), strides=1, padding=0,
                    output_padding=0):
    """Draw a transposed convolution as a sum of kernel copies, one per input element.

    The defaults are the 2x2 example of chapters/transposed-conv.md; pass
    strides=2 for the spread-out copies or padding=1 to see the border removed
    (output_padding, at most padding, keeps rows and columns at the bottom and
    right). Explained in chapters/transposed-conv.md.
    """
    X, K = np.asarray(X, dtype=np.float32), np.asarray(K, dtype=np.float32)
    (n_h, n_w), (k_h, k_w) = X.shape, K.shape
    full = trans_conv(nd.array(X), nd.array(K), strides).asnumpy()  # before cropping
    out = trans_conv(nd.array(X), nd.array(K), strides, padding, output_padding).asnumpy()
    f_h, f_w = full.shape
    # The copies sit in a grid laid out like the input: copy (i, j) belongs to X[i, j].
    top, x0 = 1.5, 1 + max(n_w, k_w) + 1.5
    pitch_x, pitch_y = f_w + 1.2, f_h + 1.6
    grid_w, grid_h = n_w * pitch_x - 1.2, n_h * pitch_y - 1.6
    mid = top + grid_h / 2
    x_sum = x0 + grid_w + 1.2
    width = x_sum + f_w + (2.5 + out.shape[1] if padding else 0) + 1
    height = top + max(grid_h, n_h + k_h + 1.5) + (2.2 if padding else 1.6)
    fig, ax = canvas(width, height)
    colors = [[PALETTE[(i * n_w + j) % len(PALETTE)] for j in range(n_w)]
              for i in range(n_h)]
    grid(ax, X, 1, top, colors, 'input')
    grid(ax, K, 1, top + n_h + 1.5, title='kernel')
    for i in range(n_h):
        for j in range(n_w):
            x, y = x0 + j * pitch_x, top + i * pitch_y
            copy = np.zeros((f_h, f_w), dtype=np.float32)
            first_row, first_col = i * strides, j * strides
            copy[first_row:first_row + k_h, first_col:first_col + k_w] = X[i, j] * K
            placed = np.zeros((f_h, f_w), dtype=bool)
            placed[first_row:first_row + k_h, first_col:first_col + k_w] = True
            cell = [[colors[i][j] if placed[a, b] else 'white' for b in range(f_w)]
                    for a in range(f_h)]
            grid(ax, copy, x, y, cell, f'{fmt(X[i, j])} x kernel', blank=~placed)
            if j < n_w - 1:
                ax.text(x + f_w + 0.6, y + f_h / 2, '+', ha='center', va='center',
                        fontsize=16)
        if i < n_h - 1:
            ax.text(x0 + grid_w / 2, top + i * pitch_y + f_h + 0.75, '+', ha='center',
                    va='center', fontsize=16)
    ax.text(x0 + grid_w + 0.6, mid, '=', ha='center', va='center', fontsize=16)
    border = None
    if padding:
        border = np.ones((f_h, f_w), dtype=bool)
        border[padding:f_h - padding + output_padding,
               padding:f_w - padding + output_padding] = False
    grid(ax, full, x_sum, mid - f_h / 2, title='sum' if padding else 'output', hatch=border)
    if padding:
        ax.annotate('', xy=(x_sum + f_w + 2, mid), xytext=(x_sum + f_w + 0.3, mid),
                    arrowprops=dict(arrowstyle='->', lw=1.5))
        grid(ax, out, x_sum + f_w + 2.5, mid - out.shape[0] / 2, title='output')
    caption = (f'transposed convolution: {n_h}x{n_w} input, {k_h}x{k_w} kernel, '
               f'stride {strides}, padding {padding}'
               + (f', output padding {output_padding}' if output_padding else '')
               + f' -> {out.shape[0]}x{out.shape[1]} output')
    if padding and not output_padding:
        caption += f'\n(padding removes {padding} row/column on each side)'
    elif output_padding:
        caption += (f'\n(padding removes {padding} row/column on each side; output padding '
                    f'keeps {output_padding} at the bottom and right)')
    ax.text(width / 2, height - 0.3, caption, ha='center', va='bottom', fontsize=11)
    return fig


def draw_trans_conv_as_conv(X=((1, 2), (3, 4)), K=((0, 1, 2), (3, 4, 5), (6, 7, 8)), strides=2,
                            padding=1, output_padding=1, highlight=((0, 0), (1, 1))):
    """Draw a transposed convolution as a stride-1 convolution of the stretched input.

    Zeros inserted between X's elements are drawn yellow, padding zeros grey;
    the kernel is K flipped. The defaults are the 2x2 -> 4x4 example of
    chapters/transposed-conv.md. Explained in chapters/transposed-conv.md.
    """
    X, K = nd.array(np.asarray(X, dtype=np.float32)), np.asarray(K, dtype=np.float32)
    args = (K.shape, strides, padding, output_padding)
    Z = stretch_input(X, *args).asnumpy()
    element = stretch_input(nd.ones(X.shape), *args).asnumpy() > 0
    # Stretching an all-ones input with stride 1 marks where X's elements spread.
    s_h, s_w = pair(strides)
    core = stretch_input(nd.ones(((X.shape[0] - 1) * s_h + 1, (X.shape[1] - 1) * s_w + 1)),
                         K.shape, 1, padding, output_padding).asnumpy() > 0
    kinds = np.where(element, 0, np.where(core, 2, 1))
    return draw_conv(Z, K[::-1, ::-1], highlight=highlight, kinds=kinds,
                     input_title='input, zeros inserted and around', kernel_title='kernel, flipped',
                     caption=f'{X.shape[0]}x{X.shape[1]} input stretched to '
                             f'{Z.shape[0]}x{Z.shape[1]}, kernel flipped, stride 1 -> '
                             f'{Z.shape[0] - K.shape[0] + 1}x{Z.shape[1] - K.shape[1] + 1}'
                             ' output = the transposed convolution')


def draw_conv_as_matrix(X=None, K=((1, 2), (3, 4))):
    """Draw y = W x for a convolution and W.T y for its transposed convolution.

    Explained in chapters/transposed-conv.md.
    """
    K = np.asarray(K, dtype=np.float32)
    X = np.arange(9, dtype=np.float32).reshape(3, 3) if X is None else np.asarray(
        X, dtype=np.float32)
    W = kernel2matrix(K, X.shape).asnumpy()  # (out_h * out_w, in_h * in_w)
    x = X.reshape(-1, 1)
    y = W @ x                                 # the convolution's output, flattened
    z = W.T @ y                               # the transposed convolution's output
    k_index = np.zeros(W.shape, dtype=int) - 1  # which kernel entry fills each cell
    out_h, out_w = conv_output_shape(X.shape, K.shape)
    for r in range(out_h * out_w):
        i, j = divmod(r, out_w)
        for a in range(K.shape[0]):
            for b in range(K.shape[1]):
                k_index[r, (i + a) * X.shape[1] + j + b] = a * K.shape[1] + b
    cell = [[PALETTE[k] if k >= 0 else 'white' for k in row] for row in k_index]
    blank = k_index < 0
    rows, cols = W.shape
    width = cols + 1 + 1 + 1 + 1 + 1 + 3 + rows + 1 + 1 + 1 + 1 + 1 + 2
    height = cols + 3.5
    fig, ax = canvas(width, height)
    top = 1.5
    mid = top + cols / 2                      # the tall vectors set the midline
    grid(ax, W, 0.5, mid - rows / 2, cell, f'W ({rows} x {cols})', blank=blank)
    ax.text(cols + 1, mid, 'x', ha='center', va='center', fontsize=14)
    grid(ax, x, cols + 1.5, top, title='x')
    ax.text(cols + 3, mid, '=', ha='center', va='center', fontsize=16)
    grid(ax, y, cols + 3.5, mid - rows / 2, title='y')
    left = cols + 7.5
    cell_t = [list(r) for r in zip(*cell)]
    grid(ax, W.T, left, top, cell_t, f'W.T ({cols} x {rows})', blank=blank.T)
    ax.text(left + rows + 0.5, mid, 'x', ha='center', va='center', fontsize=14)
    grid(ax, y, left + rows + 1, mid - rows / 2, title='y')
    ax.text(left + rows + 2.5, mid, '=', ha='center', va='center', fontsize=16)
    grid(ax, z, left + rows + 3, top, title='z')
    ax.text((cols + 4.5) / 2, height - 0.5,
            f'convolution: {X.shape[0]}x{X.shape[1]} input x, row by row -> '
            f'{out_h}x{out_w} output y', ha='center', va='bottom', fontsize=11)
    ax.text(left + (rows + 4) / 2, height - 0.5,
            "transposed convolution: y -> z = trans_conv(y, K), x's shape, not x",
            ha='center', va='bottom', fontsize=11)
    return fig


def draw_bilinear_upsampling(img=None, scale=2, zoom=(slice(170, 215), slice(175, 245))):
    """Draw a photo, its bilinear upsampling by a transposed convolution, and zooms.

    Explained in chapters/transposed-conv.md.
    """
    img = sample_photo() if img is None else np.asarray(img)
    out = upsample_bilinear(img, scale).asnumpy()        # (sH, sW, 3), 0..255
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    zy, zx = zoom
    big = (slice(zy.start * scale, zy.stop * scale), slice(zx.start * scale, zx.stop * scale))
    fig, axes = pyplot().subplots(2, 2, figsize=(6, 6.4))
    panels = [(img, f'input {img.shape[0]} x {img.shape[1]}'),
              (out, f'transposed conv, stride {scale}: {out.shape[0]} x {out.shape[1]}'),
              (img[zy, zx], 'input, zoomed'), (out[big], 'output, same region')]
    for ax, (picture, title) in zip(axes.flat, panels):
        ax.imshow(picture, interpolation='nearest')
        ax.set_title(title, fontsize=10)
        ax.axis('off')
    fig.tight_layout()
    return fig
