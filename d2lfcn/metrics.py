"""Score segmentations: a confusion matrix and the FCN paper's four metrics.

Explained in chapters/fcn.md.
"""
import numpy as np

from .utils import to_numpy

__all__ = ['confusion_matrix', 'class_iou', 'segmentation_scores',
           'SegmentationMetric']


def confusion_matrix(pred, label, num_classes, ignore_label=255):
    """Count pixels of class i (row, label) predicted as j (column).

    `pred` and `label` are label maps of one shape (NDArray or numpy, any
    dtype holding integers). Pixels whose label is `ignore_label` or outside
    0..num_classes-1 (VOC's void boundary, padding) are left out.
    Explained in chapters/fcn.md.
    """
    pred = to_numpy(pred).astype(np.int64).ravel()
    label = to_numpy(label).astype(np.int64).ravel()
    if pred.shape != label.shape:
        raise ValueError(f'pred has {pred.size} pixels but label has {label.size}')
    keep = (label >= 0) & (label < num_classes) & (label != ignore_label)
    pred, label = pred[keep], label[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f'predictions must lie in 0..{num_classes - 1}')
    # Pair (i, j) -> bin i * C + j; one bincount is the whole matrix.
    counts = np.bincount(label * num_classes + pred,
                         minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def class_iou(conf):
    """Return each class's IoU n_ii / (t_i + sum_j n_ji - n_ii); NaN if absent.

    Explained in chapters/fcn.md.
    """
    conf = np.asarray(conf, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(axis=1) + conf.sum(axis=0) - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(union > 0, inter / union, np.nan)


def segmentation_scores(conf):
    """Return pixel acc, mean acc, mean IoU and f.w. IoU of a confusion matrix.

    Definitions of Long, Shelhamer and Darrell (2015), section 5, with n_ij the
    pixels of class i predicted as j and t_i = sum_j n_ij. A class absent from
    both labels and predictions is left out of the means. A class predicted
    but never labelled has IoU 0 and counts in mean IoU; its accuracy n_ii/t_i
    is undefined (0/0), so it is left out of mean acc. With no labelled pixel
    at all every score is NaN.
    Explained in chapters/fcn.md.
    """
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.diag(conf)             # n_ii
    total = conf.sum(axis=1)            # t_i
    labelled = total > 0
    iou = class_iou(conf)
    present = ~np.isnan(iou)
    if not labelled.any():
        nan = float('nan')
        return {'pixel_acc': nan, 'mean_acc': nan, 'mean_iou': nan, 'fw_iou': nan}
    return {
        'pixel_acc': float(correct.sum() / total.sum()),
        'mean_acc': float(np.mean(correct[labelled] / total[labelled])),
        'mean_iou': float(np.mean(iou[present])),
        # Classes with t_i = 0 weigh nothing here, so summing over `present` is exact.
        'fw_iou': float((total[present] * iou[present]).sum() / total.sum()),
    }


class SegmentationMetric:
    """Accumulate one confusion matrix over batches and score it.

    Explained in chapters/fcn.md.
    """

    def __init__(self, num_classes, ignore_label=255):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.reset()

    def reset(self):
        self.conf = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, preds, labels):
        """Add a batch: predictions first, as in D2L's accuracy(y_hat, y).

        `preds` are label maps (batch, H, W) or score maps
        (batch, num_classes, H, W), `labels` are (batch, H, W); NDArray or
        numpy, or lists of them (one per device). Note that gluoncv's and
        mxnet.metric's update take (labels, preds), the other way round.
        """
        if not isinstance(preds, (list, tuple)):
            preds, labels = [preds], [labels]
        for pred, label in zip(preds, labels):
            if pred.ndim == 4:
                # argmax where the scores live (maybe a GPU), then copy the
                # C-times smaller label map to the host.
                pred = pred.argmax(axis=1)  # (batch, H, W)
            self.conf += confusion_matrix(pred, label, self.num_classes,
                                          self.ignore_label)

    def get(self):
        """Return the dict of segmentation_scores for everything added so far."""
        return segmentation_scores(self.conf)
