import torch
from torch import nn

from dfdc.faces.detector import ChannelsLastPool, FaceDetector


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
