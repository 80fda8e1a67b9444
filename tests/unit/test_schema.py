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


@given(st.integers(0, 62), st.integers(0, 62), st.integers(1, 64), st.integers(1, 64))
def test_format_parse_round_trip(x1, y1, w, h):
    x2, y2 = min(64, x1 + w), min(64, y1 + h)
    text = schema.format_bbox([x1, y1, x2, y2], 64, 64)
    parsed = schema.parse_bbox(text)
    if parsed is not None:  # boxes narrower than 1% may round to zero width
        assert schema.iou(parsed, schema.bbox_to_percent([x1, y1, x2, y2], 64, 64)) > 0.5


@given(st.lists(st.floats(0, 100), min_size=8, max_size=8))
def test_iou_in_unit_interval_and_symmetric(v):
    a = [min(v[0], v[2]), min(v[1], v[3]), max(v[0], v[2]), max(v[1], v[3])]
    b = [min(v[4], v[6]), min(v[5], v[7]), max(v[4], v[6]), max(v[5], v[7])]
    assert 0.0 <= schema.iou(a, b) <= 1.0
    assert abs(schema.iou(a, b) - schema.iou(b, a)) < 1e-12
