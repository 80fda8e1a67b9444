"""The bbox text format (shared by targets, parsers, rewards) and IoU: known answers and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from repro.data import schema


def test_known_answers():
    assert schema.format_bbox([16, 32, 48, 64], 64, 64) == "[25, 50, 75, 100]"
    assert schema.parse_bbox("Localization: [25, 50, 75, 100].") == [25, 50, 75, 100]
    assert schema.parse_bbox("no box") is None
    assert schema.parse_bbox("[50, 10, 20, 30]") is None  # x2 <= x1: degenerate
    assert schema.parse_bbox("[0, 0, 101, 5]") is None  # outside 0..100
    assert schema.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert schema.iou([0, 0, 10, 10], [5, 0, 15, 10]) == 1 / 3
    assert schema.iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0


@given(st.text())
def test_parse_bbox_total(text):
    box = schema.parse_bbox(text)
    assert box is None or (len(box) == 4 and 0 <= box[0] < box[2] <= 100 and 0 <= box[1] < box[3] <= 100)


@given(st.integers(0, 60), st.integers(0, 60), st.integers(4, 64), st.integers(4, 64))
def test_format_parse_round_trip(x1, y1, w, h):
    # Whole-percent rounding moves each edge by up to 0.5%: a box of >= 4 px (6.25%) keeps IoU > 0.5; narrower
    # ones may not (hypothesis found a 1-px box at IoU 0.41), which is the text format's resolution, not a bug.
    x2, y2 = min(64, x1 + w), min(64, y1 + h)
    parsed = schema.parse_bbox(schema.format_bbox([x1, y1, x2, y2], 64, 64))
    assert parsed is not None
    assert schema.iou(parsed, schema.bbox_to_percent([x1, y1, x2, y2], 64, 64)) > 0.5


@given(st.lists(st.floats(0, 100), min_size=8, max_size=8))
def test_iou_in_unit_interval_and_symmetric(v):
    a = [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]
    b = [min(v[4], v[6]), min(v[5], v[7]), max(v[4], v[6]), max(v[5], v[7])]
    assert 0.0 <= schema.iou(a, b) <= 1.0
    assert abs(schema.iou(a, b) - schema.iou(b, a)) < 1e-12
