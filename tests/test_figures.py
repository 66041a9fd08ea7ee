"""Test the training figures: sizes, curves' data, and the prediction grid's colours."""
import matplotlib

matplotlib.use('Agg')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from mxnet import nd  # noqa: E402

from d2lfcn.plotting import (plot_predictions, plot_runs, plot_training_curves,  # noqa: E402
                             show_images)

# VOC's published colours, written out by hand (not taken from d2lfcn).
BLACK, AEROPLANE, PERSON, VOID = (0, 0, 0), (128, 0, 0), (192, 128, 128), (224, 224, 192)

HISTORY = [dict(epoch=1, loss=1.5, train_acc=0.6, test_acc=0.65, test_miou=0.2),
           dict(epoch=2, loss=0.7, train_acc=0.8, test_acc=0.82, test_miou=0.45),
           dict(epoch=3, loss=0.4, train_acc=0.9, test_acc=0.88, test_miou=0.6)]


def _render(fig):
    """Return the figure drawn by Agg as an (H, W, 3) uint8 array."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def _pixel(img, fig, ax, fx, fy):
    """Return the rendered colour at fraction (fx, fy) of `ax`, from its top-left."""
    box = ax.get_window_extent()
    x = int(box.x0 + fx * box.width)
    y = int(fig.bbox.height - (box.y0 + (1 - fy) * box.height))  # Agg rows go down
    return tuple(int(v) for v in img[y, x])


def test_training_curves_draw_every_series():
    fig = plot_training_curves(HISTORY)
    img = _render(fig)
    assert img.shape == (250, 350, 3)
    assert (img < 200).any(axis=2).mean() > 0.02  # lines and text, not a blank page
    ax = fig.axes[0]
    drawn = {line.get_label(): line.get_ydata().tolist() for line in ax.lines}
    assert drawn == {'train loss': [1.5, 0.7, 0.4], 'train acc': [0.6, 0.8, 0.9],
                     'test acc': [0.65, 0.82, 0.88], 'test mIoU': [0.2, 0.45, 0.6]}
    assert ax.get_xlabel() == 'epoch'
    assert [int(t) for t in ax.get_xticks() if 1 <= t <= 3] == [1, 2, 3]


def test_training_curves_of_one_epoch_show_points():
    img = _render(plot_training_curves(HISTORY[:1]))
    assert img.shape == (250, 350, 3) and (img < 200).any()


def _known_maps():
    """Return (images, predictions, labels) whose colours the test knows."""
    imgs, preds, labels = [], [], []
    for i in range(4):
        img = np.zeros((32, 48, 3), dtype=np.uint8)
        img[:, :24] = (0, 0, 255)                      # left half blue
        img[:, 24:] = (0, 255, 0)                      # right half green
        pred = np.zeros((32, 48), dtype=np.uint8)
        pred[:, :24] = 1                               # aeroplane | background
        label = np.full((32, 48), 15, dtype=np.uint8)  # person ...
        label[16:] = 255                               # ... over void
        imgs.append(img / 255.0 if i % 2 else img)     # floats in [0, 1] or uint8
        preds.append(nd.array(pred) if i == 3 else pred)
        labels.append(label)
    return imgs, preds, labels


def test_prediction_grid_shows_images_predictions_and_labels_in_rows():
    imgs, preds, labels = _known_maps()
    fig = plot_predictions(imgs, preds, labels)
    img = _render(fig)
    assert img.shape == (600, 800, 3)   # D2L's 3 x 4 grid at scale 2, 100 dpi
    axes = np.array(fig.axes).reshape(3, 4)
    for col in range(4):
        assert _pixel(img, fig, axes[0, col], 0.25, 0.5) == (0, 0, 255)
        assert _pixel(img, fig, axes[0, col], 0.75, 0.5) == (0, 255, 0)
        assert _pixel(img, fig, axes[1, col], 0.25, 0.5) == AEROPLANE
        assert _pixel(img, fig, axes[1, col], 0.75, 0.5) == BLACK
        assert _pixel(img, fig, axes[2, col], 0.5, 0.25) == PERSON
        assert _pixel(img, fig, axes[2, col], 0.5, 0.75) == VOID
        assert not axes[0, col].get_xaxis().get_visible()


def test_prediction_grid_accepts_colour_images():
    imgs, _, _ = _known_maps()
    colour = np.zeros((32, 48, 3), dtype=np.uint8)
    colour[:] = PERSON
    fig = plot_predictions(imgs[:2], [colour, colour], [colour, colour])
    img = _render(fig)
    assert img.shape == (600, 400, 3)
    assert _pixel(img, fig, fig.axes[2], 0.5, 0.5) == PERSON


def test_show_images_is_d2ls():
    from matplotlib import pyplot as plt
    imgs = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    axes = show_images(imgs + [nd.array(imgs[0])], 2, 2, titles=list('abcd'), scale=1.5)
    try:
        assert len(axes) == 4
        assert [ax.get_title() for ax in axes] == list('abcd')
        fig = axes[0].figure
        assert tuple(fig.get_size_inches()) == pytest.approx((3.0, 3.0))
        np.testing.assert_array_equal(axes[1].images[0].get_array(), imgs[1])
    finally:
        plt.close('all')


def test_prediction_grid_names_its_rows_in_the_left_margin():
    imgs, preds, labels = _known_maps()
    fig = plot_predictions(imgs, preds, labels)
    img = _render(fig)
    axes = np.array(fig.axes).reshape(3, 4)
    for row, title in enumerate(['image', 'prediction', 'ground truth']):
        ax = axes[row, 0]
        texts = [t for t in ax.texts if t.get_text() == title]
        assert len(texts) == 1
        box = texts[0].get_window_extent(renderer=fig.canvas.get_renderer())
        cell = ax.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= cell.x0            # left of the row, on the canvas
        assert abs((box.y0 + box.y1) / 2 - (cell.y0 + cell.y1) / 2) < 2  # centred on it
        assert box.height > box.width                       # written upwards
        # Drawn: dark pixels in the margin beside this row only.
        rows = slice(int(fig.bbox.height - cell.y1), int(fig.bbox.height - cell.y0))
        assert (img[rows, :int(cell.x0)] < 100).any()
    assert all(not ax.texts for ax in axes[:, 1:].flat)
    untitled = plot_predictions(imgs, preds, labels, row_titles=None)
    assert not any(ax.texts for ax in untitled.axes)


RUNS = {'from scratch': HISTORY,
        'from a classifier': [dict(r, loss=r['loss'] / 2, test_miou=r['test_miou'] + 0.1)
                              for r in HISTORY]}


def test_runs_are_compared_one_panel_per_score():
    fig = plot_runs(RUNS)
    img = _render(fig)
    assert img.shape == (260, 640, 3) and (img < 200).any(axis=2).mean() > 0.02
    loss_ax, miou_ax = fig.axes
    assert loss_ax.get_title() == 'training loss'
    assert miou_ax.get_title() == 'test mIoU (centred crops)'
    assert {l.get_label(): l.get_ydata().tolist() for l in loss_ax.lines} == {
        'from scratch': [1.5, 0.7, 0.4], 'from a classifier': [0.75, 0.35, 0.2]}
    miou = {l.get_label(): l.get_ydata().tolist() for l in miou_ax.lines}
    assert miou['from scratch'] == [0.2, 0.45, 0.6]
    assert miou['from a classifier'] == pytest.approx([0.3, 0.55, 0.7])
    assert all(l.get_xdata().tolist() == [1, 2, 3] for l in fig.axes[1].lines)
    lo, hi = loss_ax.get_xlim()
    assert [t for t in loss_ax.get_xticks() if lo <= t <= hi] == [1, 2, 3]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == list(RUNS)
    assert loss_ax.lines[0].get_linestyle() != loss_ax.lines[1].get_linestyle()


def test_runs_accept_any_recorded_score():
    fig = plot_runs(RUNS, keys=('test_acc',))
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == 'test accuracy (centred crops)'


def test_titles_sit_above_the_panels():
    imgs, preds, labels = _known_maps()
    for fig in (plot_runs(RUNS, title='embedded dataset'),
                plot_predictions(imgs, preds, labels, title='embedded dataset')):
        _render(fig)
        assert fig._suptitle.get_text() == 'embedded dataset'
        box = fig._suptitle.get_window_extent(renderer=fig.canvas.get_renderer())
        assert box.y1 <= fig.bbox.height                     # on the canvas ...
        assert box.y0 >= max(ax.get_window_extent().y1 for ax in fig.axes)  # ... above all


def test_runs_of_one_epoch_have_one_integer_tick():
    fig = plot_runs({name: h[:1] for name, h in RUNS.items()})
    _render(fig)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1]
