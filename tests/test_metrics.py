"""Test the confusion matrix and the FCN paper's scores against hand counts and gluoncv."""
import numpy as np
import pytest
from gluoncv.utils.metrics import SegmentationMetric as GluonCVMetric
from mxnet import nd

from d2lfcn.metrics import (SegmentationMetric, class_iou, confusion_matrix,
                            segmentation_scores)

# Case A, three classes; the 255 pixel is void.
# label -> pred pairs: (0,0) (0,1) (1,1) (1,2) (2,2), void (255,0) left out.
LABEL_A = [[0, 0, 1], [1, 2, 255]]
PRED_A = [[0, 1, 1], [2, 2, 0]]
CONF_A = [[1, 1, 0],
          [0, 1, 1],
          [0, 0, 1]]
# n_ii = 1, 1, 1; t_i = 2, 2, 1; column sums 1, 2, 2; 5 labelled pixels.
SCORES_A = {
    'pixel_acc': 3 / 5,
    'mean_acc': (1 / 2 + 1 / 2 + 1 / 1) / 3,                     # 2/3
    'mean_iou': (1 / (2 + 1 - 1) + 1 / (2 + 2 - 1) + 1 / (1 + 2 - 1)) / 3,  # 4/9
    'fw_iou': (2 * 1 / 2 + 2 * 1 / 3 + 1 * 1 / 2) / 5,          # 13/30
}


def assert_scores(got, expected):
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_hand_computed_case():
    conf = confusion_matrix(np.array(PRED_A), np.array(LABEL_A), 3)
    assert conf.dtype == np.int64
    np.testing.assert_array_equal(conf, CONF_A)
    assert_scores(segmentation_scores(conf), SCORES_A)
    assert SCORES_A['mean_iou'] == pytest.approx(4 / 9)
    assert SCORES_A['fw_iou'] == pytest.approx(13 / 30)


def test_ndarray_float_labels_as_the_dataset_yields_them():
    conf = confusion_matrix(nd.array(PRED_A), nd.array(LABEL_A, dtype='float32'), 3)
    np.testing.assert_array_equal(conf, CONF_A)


def test_labels_outside_the_classes_are_void_too():
    label = [[0, 0, 1], [1, 2, 255], [-1, 3, 7]]
    pred = [[0, 1, 1], [2, 2, 0], [0, 1, 2]]
    np.testing.assert_array_equal(confusion_matrix(pred, label, 3), CONF_A)


def test_custom_ignore_label():
    # Ignoring class 0 removes the first row: pairs (1,1) (1,2) (2,2) remain.
    conf = confusion_matrix(PRED_A, LABEL_A, 3, ignore_label=0)
    np.testing.assert_array_equal(conf, [[0, 0, 0], [0, 1, 1], [0, 0, 1]])


def test_class_absent_everywhere_is_left_out_of_the_means():
    conf = confusion_matrix(PRED_A, LABEL_A, 4)  # class 3: never labelled nor predicted
    assert np.isnan(class_iou(conf)[3])
    assert_scores(segmentation_scores(conf), SCORES_A)


def test_class_predicted_but_never_labelled():
    # Pairs (0,0) (0,3) (1,1) (1,1); t = 2, 2, 0, 0; column sums 1, 2, 0, 1.
    conf = confusion_matrix([0, 3, 1, 1], [0, 0, 1, 1], 4)
    np.testing.assert_array_equal(conf, [[1, 0, 0, 1], [0, 2, 0, 0],
                                         [0, 0, 0, 0], [0, 0, 0, 0]])
    iou = class_iou(conf)
    assert iou[0] == 1 / 2 and iou[1] == 1 and np.isnan(iou[2]) and iou[3] == 0
    assert_scores(segmentation_scores(conf), {
        'pixel_acc': 3 / 4,
        'mean_acc': (1 / 2 + 2 / 2) / 2,        # class 3's 0/0 accuracy left out
        'mean_iou': (1 / 2 + 1 + 0) / 3,        # class 3 counts with IoU 0
        'fw_iou': (2 * 1 / 2 + 2 * 1) / 4,
    })


def test_no_labelled_pixel_gives_nan():
    scores = segmentation_scores(confusion_matrix([1, 2], [255, 255], 3))
    assert all(np.isnan(v) for v in scores.values())


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0, 1, 1], 3)
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_accumulator_over_batches_score_maps_and_devices():
    metric = SegmentationMetric(3)
    # Batch 1: case A given as one-hot score maps (batch, C, H, W) on "two devices".
    scores = np.eye(3)[np.array(PRED_A)].transpose(2, 0, 1)[None]  # (1, 3, 2, 3)
    metric.update([nd.array(scores[:, :, :1]), nd.array(scores[:, :, 1:])],
                  [nd.array(LABEL_A)[None, :1], nd.array(LABEL_A)[None, 1:]])
    # Batch 2: label 2, 2 predicted as 2, 1 (numpy label maps).
    metric.update(np.array([[[2, 1]]]), np.array([[[2, 2]]]))
    np.testing.assert_array_equal(metric.conf, [[1, 1, 0], [0, 1, 1], [0, 1, 2]])
    # n_ii = 1, 1, 2; t = 2, 2, 3; column sums 1, 3, 3; 7 pixels.
    assert_scores(metric.get(), {
        'pixel_acc': 4 / 7,
        'mean_acc': (1 / 2 + 1 / 2 + 2 / 3) / 3,
        'mean_iou': (1 / 2 + 1 / (2 + 3 - 1) + 2 / (3 + 3 - 2)) / 3,
        'fw_iou': (2 * 1 / 2 + 2 * 1 / 4 + 3 * 1 / 2) / 7,
    })
    metric.reset()
    assert metric.conf.sum() == 0


def _gluoncv_scores(pred, label, num_classes):
    """Run gluoncv's SegmentationMetric on our label maps.

    gluoncv takes score maps and argmaxes them, so preds become one-hot scores.
    Its batch functions add 1 to labels and keep target > 0, so its only void
    label is -1 (background 0 counts, unlike its ADE20K pixelAccuracy helper):
    our 255 maps to -1. Its pixAcc = sum n_ii / labelled pixels equals our
    pixel_acc, and its per-class IoU (predictions on void pixels zeroed) equals
    ours; but its mIoU averages over all classes, absent ones counting 0.
    """
    metric = GluonCVMetric(num_classes)
    scores = np.eye(num_classes, dtype='float32')[pred].transpose(0, 3, 1, 2)
    metric.update(nd.array(np.where(label == 255, -1, label)), nd.array(scores))
    return metric.get()


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_against_gluoncv(seed):
    rng = np.random.RandomState(seed)
    c = 5
    label = rng.randint(0, c, size=(4, 16, 16))
    label[rng.rand(4, 16, 16) < 0.1] = 255
    # A noisy but informative predictor, so scores are far from 0 and 1.
    pred = np.where(rng.rand(4, 16, 16) < 0.6, label % c, rng.randint(0, c, (4, 16, 16)))
    ours = segmentation_scores(confusion_matrix(pred, label, c))
    pix_acc, miou = _gluoncv_scores(pred, label, c)
    assert ours['pixel_acc'] == pytest.approx(pix_acc, rel=1e-9)
    assert ours['mean_iou'] == pytest.approx(miou, rel=1e-9)
    # Class 4 removed from labels and predictions: gluoncv averages over 5
    # classes with a 0 for class 4, we over the 4 present ones.
    label[label == 4], pred[pred == 4] = 255, 0
    ours = segmentation_scores(confusion_matrix(pred, label, c))
    pix_acc, miou = _gluoncv_scores(pred, label, c)
    assert ours['pixel_acc'] == pytest.approx(pix_acc, rel=1e-9)
    assert ours['mean_iou'] * 4 / 5 == pytest.approx(miou, rel=1e-9)
