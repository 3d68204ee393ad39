import numpy as np

from dfdc.faces.detector import detector_scale
from dfdc.faces.tracks import drop_short_tracks, iou, link_tracks


def test_iou_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert np.allclose(iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_two_faces_keep_their_tracks_and_a_flash_is_dropped():
    left = [np.array([10 + 3 * t, 50, 60 + 3 * t, 100]) for t in range(8)]
    right = [np.array([200 - 3 * t, 50, 250 - 3 * t, 100]) for t in range(8)]
    boxes = [np.stack([left[t], right[t]]) for t in range(8)]
    boxes[4] = np.vstack([boxes[4], [[400, 400, 420, 420]]])  # a one-frame false face
    boxes[5] = boxes[5][::-1]  # detector order changes
    ids = link_tracks(list(range(8)), boxes)
    assert [int(i[0]) for i in ids[:5]] == [0] * 5 and int(ids[5][1]) == 0 and int(ids[5][0]) == 1
    keep = drop_short_tracks(ids, 3)
    assert keep == {0, 1}


def test_crossing_faces_do_not_merge_into_one_track():
    # two faces pass through each other; while they overlap the tracker must not lose either
    a = [np.array([10 + 20 * t, 50, 70 + 20 * t, 110]) for t in range(10)]
    b = [np.array([190 - 20 * t, 55, 250 - 20 * t, 115]) for t in range(10)]
    ids = link_tracks(list(range(10)), [np.stack([a[t], b[t]]) for t in range(10)])
    assert all(len(set(map(int, i))) == 2 for i in ids)  # never the same id twice in one frame
    assert len(drop_short_tracks(ids, 3)) >= 2


def test_track_survives_a_short_gap():
    boxes = [np.array([[10, 10, 50, 50]]), np.zeros((0, 4)), np.array([[12, 10, 52, 50]])]
    ids = link_tracks([0, 10, 20], boxes, max_gap=1)
    assert int(ids[0][0]) == int(ids[2][0])


def test_detector_scale_rule():
    assert detector_scale(280, 200) == 2.0
    assert detector_scale(640, 480) == 1.0
    assert detector_scale(1920, 1080) == 0.33
    assert detector_scale(1080, 1920) == 0.33
    assert detector_scale(1280, 720) == 0.5
