"""Confusion matrix and scores (SPEC §7) on hand-made label maps, against torchmetrics."""
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix

from utils.metrics import (ConfusionMeter, confusion_matrix, format_report, plot_confusion,
                           plot_iou_bars, scores)

# 4 classes; class 3 appears in neither map; 255 = ignore
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 2, 2, 255],
                       [255, 2, 1, 0]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [0, 2, 0, 3],       # the prediction under an ignored pixel is not counted
                     [2, 2, 1, 0]])
# rows = ground truth: gt 0 -> pred 0,1,0,0 ; gt 1 -> 1,1,1 ; gt 2 -> 2,0,2
CONF = torch.tensor([[3, 1, 0, 0],
                     [0, 3, 0, 0],
                     [1, 0, 2, 0],
                     [0, 0, 0, 0]])


def test_confusion_matrix_by_hand():
    conf = confusion_matrix(PRED, TARGET, 4)
    assert conf.dtype == torch.long
    assert torch.equal(conf, CONF)


def test_confusion_matrix_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 6, (2, 17, 23), generator=g)
    t[t == 5] = 255
    p = torch.randint(0, 5, (2, 17, 23), generator=g)
    want = multiclass_confusion_matrix(p, t, num_classes=5, ignore_index=255)
    assert torch.equal(confusion_matrix(p, t, 5), want.long())
    assert torch.equal(confusion_matrix(PRED, TARGET, 4),
                       multiclass_confusion_matrix(PRED, TARGET, num_classes=4, ignore_index=255).long())


def test_scores_by_hand_with_absent_class():
    s = scores(CONF)
    # IoU = tp / (gt + pred - tp): 3/(4+4-3), 3/(3+4-3), 2/(3+2-2), absent
    iou = [3 / 5, 3 / 4, 2 / 3]
    assert s["iou"][:3] == pytest.approx(iou)
    assert math.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx(sum(iou) / 3)
    assert s["pixel_acc"] == pytest.approx(8 / 10)
    assert s["recall"][:3] == pytest.approx([3 / 4, 1, 2 / 3]) and math.isnan(s["recall"][3])
    assert s["mean_acc"] == pytest.approx((3 / 4 + 1 + 2 / 3) / 3)
    assert s["precision"][:3] == pytest.approx([3 / 4, 3 / 4, 1]) and math.isnan(s["precision"][3])


def test_class_predicted_but_absent_from_ground_truth_scores_zero():
    conf = torch.tensor([[2, 1], [0, 0]])  # class 1 only predicted
    s = scores(conf)
    assert s["iou"] == pytest.approx([2 / 3, 0.0])
    assert s["miou"] == pytest.approx(1 / 3)


def test_out_of_range_labels_are_errors():
    with pytest.raises(ValueError, match=r"ground truth has label values \[7\] \(1 pixel\) outside 0\.\.3"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 4)
    with pytest.raises(ValueError, match=r"ground truth has label values \[-1\]"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, -1]), 4)
    with pytest.raises(ValueError, match=r"prediction has label values \[4\]"):
        confusion_matrix(torch.tensor([0, 4]), torch.tensor([0, 1]), 4)
    # a prediction has no ignore value: 255 where the ground truth is scored is an error ...
    with pytest.raises(ValueError, match=r"prediction has label values \[255\] \(1 pixel\) outside 0\.\.3 "
                                         r"\(4 classes\) on scored pixels"):
        confusion_matrix(torch.tensor([0, 255]), torch.tensor([0, 1]), 4)
    # ... and anything goes where it is ignored
    assert confusion_matrix(torch.tensor([0, 99]), torch.tensor([0, 255]), 4).sum() == 1
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), 4)


def test_meter_accumulates_and_all_reduce_is_noop_without_dist():
    m = ConfusionMeter(4)
    m.update(PRED[:2], TARGET[:2])
    m.update(PRED[2:], TARGET[2:].to(torch.uint8))
    assert torch.equal(m.all_reduce().conf, CONF)
    assert m.scores()["miou"] == pytest.approx(scores(CONF)["miou"])


def _rank_worker(r, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=world)
    m = ConfusionMeter(4)
    m.update(PRED[r::2], TARGET[r::2])  # rank 0 gets rows 0 and 2, rank 1 row 1
    m.all_reduce()
    if r == 0:
        torch.save(m.conf, out_file)
    dist.barrier()
    dist.destroy_process_group()


def test_all_reduce_sums_over_ranks(tmp_path):
    out = tmp_path / "conf.pt"
    # fork: the workers need no fresh interpreter (spawn would re-import torch twice, seconds)
    mp.start_processes(_rank_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2,
                       join=True, start_method="fork")
    assert torch.equal(torch.load(out), CONF)


def test_format_report():
    names = ["background", "cat", "dog", "unicorn"]
    text = format_report(scores(CONF), names)
    lines = text.splitlines()
    assert lines[0] == f"mIoU: {100 * (3 / 5 + 3 / 4 + 2 / 3) / 3:.2f}"
    assert "pixel accuracy: 80.00" in lines
    assert any(ln.split() == ["background:", "60.00"] for ln in lines)
    assert any(ln.split() == ["dog:", "66.67"] for ln in lines)
    assert any(ln.split() == ["unicorn:", "n/a"] for ln in lines)


def test_plots_are_written_atomically(tmp_path):
    names = ["background", "cat", "dog", "unicorn"]
    bars, mat = tmp_path / "iou.png", tmp_path / "sub" / "conf.png"
    plot_iou_bars(scores(CONF), names, str(bars))
    plot_confusion(CONF, names, str(mat))
    for p in (bars, mat):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
            assert np.asarray(im.convert("L")).std() > 0  # not a blank canvas
    leftovers = [f for f in os.listdir(tmp_path) + os.listdir(tmp_path / "sub") if ".tmp" in f]
    assert leftovers == []


def test_one_label_rule_for_numpy_and_torch():
    """utils.labels: values 0..C-1 or the ignore value; the datasets' numpy check and the
    metric's torch check are the same function."""
    from datasets.layout import DatasetError, check_label_values
    from utils.labels import invalid_label_mask, label_value_problem
    values = np.array([[0, 3, 4, 255], [254, 21, 3, 4]], np.uint8)
    want = [[False, False, True, False], [True, True, False, True]]
    assert invalid_label_mask(values, 4).tolist() == want
    assert invalid_label_mask(torch.from_numpy(values), 4).tolist() == want
    no_ignore = invalid_label_mask(torch.from_numpy(values).long(), 4, None)
    assert no_ignore.tolist()[0] == [False, False, True, True]
    msg = "label values [4, 21, 254] (4 pixels) outside 0..3 (4 classes) and 255 (ignore)"
    assert label_value_problem(values, 4) == msg
    assert label_value_problem(torch.from_numpy(values), 4) == msg
    assert label_value_problem(values, 255) is None and label_value_problem(values[:, :2], 255, None) is None
    many = np.arange(30, 60, dtype=np.uint8)
    assert "values [30, 31, 32, 33, 34, 35, 36, 37, ...] (30 pixels)" in label_value_problem(many, 21)
    with pytest.raises(DatasetError, match=r"^x/y\.png: pseudo values \[4, 21, 254\]"):
        check_label_values(values, 4, "x/y.png", what="pseudo")
    check_label_values(values, 255, "x/y.png")


# ----------------------------------------------------------------------------- per-case metrics
def _blobs(rng, shape):
    a = np.zeros(shape, bool)
    b = np.zeros(shape, bool)
    a[..., 5:20, 8:30] = True
    b[..., 7:25, 5:27] = True
    a &= rng.random(shape) > 0.1   # holes
    b |= rng.random(shape) > 0.97  # specks far away
    return a, b


@pytest.mark.parametrize("shape, spacing", [((30, 40), None), ((30, 40), (1.5, 0.7)), ((5, 30, 40), (10.0, 1.5625, 1.5625)),
                                            ((5, 30, 40), None)])
def test_dice_hd95_assd_asd_equal_medpy(shape, spacing):
    """The field's reference implementation (WSL4MIS's test_2D_fully.py uses it): equal, not close."""
    from medpy.metric import binary
    from utils.metrics import binary_scores
    rng = np.random.default_rng(len(shape) + (spacing is None))
    for _ in range(3):
        a, b = _blobs(rng, shape)
        got = binary_scores(a, b, spacing)
        assert got["dice"] == binary.dc(a, b) and got["note"] == ""
        assert got["hd95"] == binary.hd95(a, b, spacing)
        assert got["assd"] == binary.assd(a, b, spacing)
        assert got["asd"] == binary.asd(a, b, spacing)  # pred -> truth, WSL4MIS's "ASD"
    # a structure touching the array's edge: its surface runs along the edge (medpy's erosion)
    edge_a, edge_b = np.zeros(shape, bool), np.zeros(shape, bool)
    edge_a[..., :10, :12] = True
    edge_b[..., :14, :9] = True
    assert binary_scores(edge_a, edge_b, spacing)["hd95"] == binary.hd95(edge_a, edge_b, spacing)


def test_empty_structures_follow_the_documented_convention():
    from utils.metrics import binary_scores
    some = np.zeros((8, 8), bool)
    some[2:5, 2:5] = True
    none = np.zeros((8, 8), bool)
    absent = binary_scores(none, none)
    assert absent["note"] == "absent" and all(math.isnan(absent[k]) for k in ("dice", "hd95", "assd", "asd"))
    for pred, truth, note in ((none, some, "missed"), (some, none, "spurious")):
        r = binary_scores(pred, truth)
        assert r["note"] == note and r["dice"] == 0.0 and math.isnan(r["hd95"]) and math.isnan(r["assd"])
    with pytest.raises(ValueError, match="spacing"):
        binary_scores(some, some, (1.0, 0.0))


def test_case_table_means_counts_csv_and_report(tmp_path):
    """Mean ± sample std over cases per class, NaN left out with its count, one CSV row per
    (case, class), the ignore value of the truth left out of both masks."""
    from utils.metrics import CaseTable, case_scores
    truth = np.zeros((2, 10, 10), np.uint8)
    truth[:, 2:6, 2:6] = 1
    truth[:, 6:9, 6:9] = 2
    pred = truth.copy()
    pred[0, 2, 2:6] = 0                      # case A: class 1 loses a row of one slice
    table = CaseTable(["bg", "one", "two"], [1, 2], ["dice", "hd95", "assd"], "mm")
    table.add("A", case_scores(pred, truth, [1, 2], (5.0, 1.0, 1.0)))
    missed = truth.copy()
    missed[missed == 2] = 0                  # case B: class 2 never predicted
    ignored = truth.copy()
    ignored[:, 0, :] = 255                   # ...and the truth's 255 row is not scored
    missed[:, 0, :] = 1
    table.add("B", case_scores(missed, ignored, [1, 2], (5.0, 1.0, 1.0)))
    s = table.summary()
    dice_a = 2 * 28 / (28 + 32)
    assert s["cases"] == 2 and s["unit"] == "mm"
    assert s["dice"]["one"]["mean"] == pytest.approx((dice_a + 1.0) / 2)
    assert s["dice"]["one"]["std"] == pytest.approx(np.std([dice_a, 1.0], ddof=1))
    assert s["dice"]["two"] == {"mean": 0.5, "std": pytest.approx(np.std([1.0, 0.0], ddof=1)), "n": 2}
    assert s["hd95"]["two"]["n"] == 1 and s["hd95"]["two"]["mean"] == 0.0   # B's undefined HD95 left out
    assert s["notes"]["two"] == {"absent": 0, "missed": 1, "spurious": 0}
    table.write_csv(str(tmp_path / "cases.csv"))
    rows = (tmp_path / "cases.csv").read_text().splitlines()
    assert rows[0] == "case,class,dice,hd95,assd,asd,note" and len(rows) == 5
    assert rows[-1].startswith("B,two,0,,,,missed")
    text = table.report(s)
    assert "Dice (%)" in text and "HD95 (mm)" in text and "two: 1 missed" in text
