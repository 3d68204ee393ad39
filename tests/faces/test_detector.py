import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfdc.faces.detector import ChannelsLastPool, FaceDetector, area_resize, mtcnn_cascade, summed_area
from dfdc.video import read_frames


def test_channels_last_pool_same_values_and_layout():
    pool = nn.MaxPool2d(3, 2, ceil_mode=True)
    x = torch.randn(5, 7, 23, 22)
    y = ChannelsLastPool(pool)(x)
    assert torch.equal(y, pool(x)) and y.is_contiguous()
    xc = x.contiguous(memory_format=torch.channels_last)
    yc = ChannelsLastPool(pool)(xc)
    assert torch.equal(yc, pool(xc)) and yc.is_contiguous(memory_format=torch.channels_last)


def test_detector_pools_run_channels_last_on_cpu():
    det = FaceDetector(device="cpu")
    pools = [m for net in (det.mtcnn.pnet, det.mtcnn.rnet, det.mtcnn.onet) for m in net.children()
             if isinstance(m, (nn.MaxPool2d, ChannelsLastPool))]
    assert len(pools) == 6 and all(isinstance(m, ChannelsLastPool) for m in pools)


def test_area_resize_is_bit_identical_to_interpolate_area():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 57, 83, 3), dtype=np.uint8)
    table = summed_area(images)
    regions = [(0, 0, 57, 83), (1, 3, 50, 70), (0, 10, 20, 33), (1, 40, 45, 47), (0, 0, 1, 1)]  # image, y0, y1...
    image, y0, y1 = (np.array([r[k] for r in regions], np.int64) for k in range(3))
    x0 = np.array([0, 7, 15, 60, 82], np.int64)
    x1 = np.array([83, 80, 22, 83, 83], np.int64)
    for out_h, out_w in [(24, 24), (48, 48), (18, 26), (60, 90)]:  # down- and up-sampling
        got = area_resize(table, image, y0, y1, x0, x1, out_h, out_w)
        for n in range(len(image)):
            region = torch.from_numpy(images[image[n], y0[n]:y1[n], x0[n]:x1[n]]).permute(2, 0, 1)[None].float()
            want = F.interpolate(region, size=(out_h, out_w), mode="area")[0]
            assert torch.equal(got[n], want), (n, out_h, out_w)


@pytest.mark.parametrize("source", ["ffpp", "sample"])
def test_cascade_matches_facenet_detect_face(source, request):
    from facenet_pytorch.models.utils.detect_face import detect_face

    root = request.getfixturevalue("ffpp_root" if source == "ffpp" else "tiny_sample")
    det = request.getfixturevalue("detector")
    m = det.mtcnn
    path = sorted(root.rglob("*.mp4"))[0]
    frames, _ = read_frames(path, [0, 7, 20, 33])
    batch = np.stack(list(frames.values()))
    with torch.inference_mode():
        want_boxes, want_points = detect_face(batch, 40, m.pnet, m.rnet, m.onet, m.thresholds, m.factor, m.device)
        got = mtcnn_cascade(batch, 40, m, m.device)
    assert sum(len(b) for b, _ in got) >= len(batch)
    for wb, wp, (gb, gp) in zip(want_boxes, want_points, got):
        np.testing.assert_allclose(gb, np.asarray(wb, np.float32), atol=1e-3)
        np.testing.assert_allclose(gp, np.asarray(wp, np.float32), atol=1e-3)


def test_cascade_without_candidates_finds_nothing(detector):
    tiny = np.full((2, 20, 24, 3), 128, np.uint8)  # smaller than the smallest face: no pyramid level
    blank = np.zeros((2, 120, 160, 3), np.uint8)
    for batch in (tiny, blank):
        with torch.inference_mode():
            got = mtcnn_cascade(batch, 40, detector.mtcnn, torch.device("cpu"))
        assert [(b.shape, p.shape) for b, p in got] == [((0, 5), (0, 5, 2))] * 2
    assert [len(f) for f in detector.detect(list(np.zeros((3, 16, 16, 3), np.uint8)))] == [0, 0, 0]


def test_refine_drops_boxes_outside_the_image(detector):
    from dfdc.faces.detector import _refine

    images = np.zeros((1, 60, 80, 3), np.uint8)
    boxes = torch.tensor([[90.0, 70.0, 110.0, 90.0, 0.9]])  # entirely right of and below the image
    with torch.inference_mode():
        kept, inds, out = _refine(summed_area(images), boxes, torch.zeros(1, dtype=torch.int64),
                                  detector.mtcnn.rnet, 24, 80, 60)
    assert len(kept) == 0 and len(inds) == 0 and out is None


def test_the_smallest_face_is_20_px_at_the_detectors_input_and_40_at_full_resolution():
    det = FaceDetector(device="cpu")
    assert det.smallest_face(320, 240) == (40, 40.0)  # x1: the full-resolution floor
    assert det.smallest_face(640, 480) == (40, 40.0)
    assert det.smallest_face(1280, 720) == (20, 40.0)  # x0.5
    at_input, full = det.smallest_face(1920, 1080)  # x0.33: 20 px there are 60 here (the 1st place's setting)
    assert at_input == 20 and full == pytest.approx(60.6, abs=0.1)
    assert FaceDetector(device="cpu", min_face_input=12).smallest_face(1920, 1080) == (13, 40.0)
