import numpy as np
import pytest

from dfdc.faces.detector import detector_scale
from dfdc.faces.tracks import detect_subset, drop_short_tracks, grow_boxes, interpolate_tracks, iou, link_tracks


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


def _at(filled, frames, frame):
    rows, ids, hit = filled[frames.index(frame)]
    return {int(t): (r.tolist(), bool(h)) for r, t, h in zip(rows, ids, hit)}


def test_interpolate_between_two_detections():
    frames = [0, 2, 4, 6, 8]
    rows = [np.array([[0, 0, 10, 10, 0.9]]), np.array([[8, 4, 18, 14, 1.0]])]  # box and detector score
    filled = interpolate_tracks(frames, [0, 8], rows, [np.array([0]), np.array([0])])
    assert _at(filled, frames, 0) == {0: ([0, 0, 10, 10, 0.9], True)}
    assert _at(filled, frames, 2) == {0: ([2, 1, 12, 11, 0.925], False)}
    assert _at(filled, frames, 4) == {0: ([4, 2, 14, 12, 0.95], False)}
    assert _at(filled, frames, 6) == {0: ([6, 3, 16, 13, 0.975], False)}
    assert _at(filled, frames, 8) == {0: ([8, 4, 18, 14, 1.0], True)}


def test_interpolate_holds_end_boxes_up_to_the_next_detected_frame():
    frames = list(range(10))
    a0, a3, b6, b9 = [0, 0, 10, 10], [3, 0, 13, 10], [50, 50, 60, 60], [53, 50, 63, 60]
    # track 0 seen at 0 and 3, then gone; track 1 appears at 6
    rows = [np.array([a0]), np.array([a3]), np.array([b6]), np.array([b9])]
    ids = [np.array([0]), np.array([0]), np.array([1]), np.array([1])]
    filled = interpolate_tracks(frames, [0, 3, 6, 9], rows, ids)
    assert _at(filled, frames, 1) == {0: ([1, 0, 11, 10], False)}
    assert _at(filled, frames, 2) == {0: ([2, 0, 12, 10], False)}
    assert _at(filled, frames, 4) == {0: (a3, False), 1: (b6, False)}  # both held, ordered by track
    assert _at(filled, frames, 5) == {0: (a3, False), 1: (b6, False)}
    assert _at(filled, frames, 6) == {1: (b6, True)}  # the detector looked at 6: track 0 is not there
    assert _at(filled, frames, 7) == {1: ([51, 50, 61, 60], False)}
    # detected frames need not include the ends: the end boxes are held to the first and last frame
    filled = interpolate_tracks(list(range(5)), [1, 3], [np.array([a0]), np.array([a3])], [np.array([4])] * 2)
    assert [_at(filled, list(range(5)), f) for f in range(5)] == [
        {4: (a0, False)}, {4: (a0, True)}, {4: ([1.5, 0, 11.5, 10], False)}, {4: (a3, True)}, {4: (a3, False)}]


def test_interpolate_does_not_carry_a_face_seen_once():
    frames = list(range(7))
    main_track = [np.array([[0, 0, 10, 10]])] * 3
    rows = [main_track[0], np.array([[0, 0, 10, 10], [40, 40, 50, 50]]), main_track[2]]  # a flash at 3
    ids = [np.array([0]), np.array([0, 1]), np.array([0])]
    filled = interpolate_tracks(frames, [0, 3, 6], rows, ids)
    assert [sorted(_at(filled, frames, f)) for f in frames] == [[0], [0], [0], [0, 1], [0], [0], [0]]
    filled = interpolate_tracks(frames, [0, 3, 6], rows, ids, min_hits=1)
    assert [sorted(_at(filled, frames, f)) for f in frames] == [[0], [0, 1], [0, 1], [0, 1], [0, 1], [0, 1], [0]]


def test_interpolate_gap_bridged_only_as_far_as_the_tracker_allows():
    frames = list(range(7))
    a, b = np.array([[0, 0, 10, 10]]), np.array([[6, 0, 16, 10]])
    none = np.zeros((0, 4))
    rows = [a, none, none, b]  # seen at 0 and 6, missed by the detector at 2 and 4
    ids = [np.array([0]), np.zeros(0, int), np.zeros(0, int), np.array([0])]
    filled = interpolate_tracks(frames, [0, 2, 4, 6], rows, ids, max_gap=2)
    assert _at(filled, frames, 1) == {0: ([1, 0, 11, 10], False)}
    assert _at(filled, frames, 3) == {0: ([3, 0, 13, 10], False)}
    assert _at(filled, frames, 5) == {0: ([5, 0, 15, 10], False)}
    assert _at(filled, frames, 2) == {} and _at(filled, frames, 4) == {}  # looked there and saw nothing
    filled = interpolate_tracks(frames, [0, 2, 4, 6], rows, ids, max_gap=1, min_hits=1)  # two missed > 1: split
    assert _at(filled, frames, 1) == {0: ([0, 0, 10, 10], False)}
    assert _at(filled, frames, 3) == {}
    assert _at(filled, frames, 5) == {0: ([6, 0, 16, 10], False)}


def test_interpolate_on_every_frame_returns_the_detections():
    boxes = [np.array([[10 + t, 5, 50 + t, 45], [200, 5, 240, 45]], float) for t in range(5)]
    ids = link_tracks(list(range(5)), boxes)
    filled = interpolate_tracks(list(range(5)), list(range(5)), boxes, ids)
    for b, i, (rows, tids, hit) in zip(boxes, ids, filled):
        order = np.argsort(i)
        assert np.array_equal(rows, b[order]) and np.array_equal(tids, i[order]) and hit.all()


def test_interpolate_without_faces_and_bad_input():
    filled = interpolate_tracks([0, 5, 10], [0, 10], [np.zeros((0, 5)), np.zeros((0, 5))],
                                [np.zeros(0, int), np.zeros(0, int)])
    assert [(r.shape, len(t), len(h)) for r, t, h in filled] == [((0, 4), 0, 0)] * 3
    with pytest.raises(ValueError, match="subset"):
        interpolate_tracks([0, 5, 10], [3], [np.zeros((0, 4))], [np.zeros(0, int)])
    with pytest.raises(ValueError, match="each of the 2"):
        interpolate_tracks([0, 5, 10], [0, 10], [np.zeros((0, 4))], [np.zeros(0, int)])


def test_detect_subset_spacing():
    assert detect_subset(list(range(0, 41, 2)), 10) == [0, 10, 20, 30, 40]
    assert detect_subset([0, 3, 6, 9, 12, 15], 5) == [0, 6, 9, 15]  # targets 0, 5, 10, 15 -> nearest frames
    assert detect_subset([0, 25, 50], 10) == [0, 25, 50]  # sampled sparser than every 10: all of them
    assert detect_subset(list(range(30)), 1) == list(range(30))
    assert detect_subset([7], 10) == [7] and detect_subset([], 10) == []
    with pytest.raises(ValueError, match="every"):
        detect_subset([0, 1], 0)


def test_fast_face_between_sparse_detections_stays_one_track():
    # a 64 px face seen every 10th frame, moving 25-35 px between detections (plain IoU 0.2-0.3)
    xs = [346, 344, 312, 277, 266, 293]
    boxes = [np.array([[x, 145 + 3 * k, x + 64, 232 + 3 * k]]) for k, x in enumerate(xs)]
    ids = link_tracks([0, 10, 20, 30, 40, 50], boxes)
    assert len({int(i[0]) for i in ids}) == 1
    assert drop_short_tracks(ids, 3) == {int(ids[0][0])}


def test_grow_boxes():
    np.testing.assert_allclose(grow_boxes(np.array([[10, 20, 30, 60]]), 2.0), [[0, 0, 40, 80]])
