"""A model with a clip spec gets (B, 3, T, H, W) batches from the dataset path, trains and is scored."""
import numpy as np
import pandas as pd
import pytest
from torch import nn

from dfdc.config.train import AugmentParams, ModelParams
from dfdc.data.clips import frame_key
from dfdc.models import MODELS, DeepfakeModel, ModelOutput, ModelSpec, register
from dfdc.store import ShardWriter, encode_png

T = 4


class TinyClipModel(DeepfakeModel):
    """A one-layer 3D CNN standing in for the video models; records the shapes it eats."""

    seen: list = []

    def __init__(self, input_size: int = 32, **_):
        super().__init__()
        self.spec = ModelSpec("clip", input_size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), clip_len=T, frame_stride=2,
                              head=("fc",))
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        TinyClipModel.seen.append(tuple(x.shape))
        return ModelOutput(self.fc(self.conv(x).mean(dim=(2, 3, 4))).squeeze(-1))


@pytest.fixture()
def clip_model():
    register("tiny_clip", lambda input_size=32, clip_len=T, frame_stride=2, **kw: TinyClipModel(input_size))
    TinyClipModel.seen = []
    yield "tiny_clip"
    del MODELS["tiny_clip"]


@pytest.fixture()
def clips(tmp_path):
    """8 clips of T frames (4 videos x 2 tracks): fakes brighter than reals; two folds."""
    rng = np.random.default_rng(0)
    w = ShardWriter(tmp_path / "clips", shard_size=3)
    rows = []
    for v in range(4):
        for track in range(2):
            label = v % 2
            key = f"v{v}.mp4|{track}"
            base = 150 if label else 60
            shard = w.add_group([(frame_key(key, t), encode_png(rng.integers(base - 20, base + 20, (24, 20, 3),
                                                                             dtype=np.uint8))) for t in range(T)])
            rows.append({"key": key, "video": f"v{v}.mp4", "label": label, "shard": shard, "frames": T,
                         "frame": 0, "track": track})
    w.close()
    table = pd.DataFrame(rows)
    folds = pd.DataFrame({"video": [f"v{v}.mp4" for v in range(4)], "label": [0, 1, 0, 1], "fold": [0, 0, 1, 1],
                          "original": [None, "v0.mp4", None, "v2.mp4"]})
    return table, folds, tmp_path / "clips"


def test_clip_model_eats_5d_batches_from_the_dataset_path(clip_model, clips, tmp_path):
    from dfdc.inference.scorer import ScoringModel, from_checkpoint, score_table
    from dfdc.models.checkpoint import load
    from dfdc.train.loop import TrainJob, train_model

    table, folds, d = clips
    p = ModelParams(arch=clip_model, input_size=32, epochs=2, batch_size=2,
                    augment=AugmentParams(jpeg=False, noise=True, blur=False, hflip=True, color=False, gray=False,
                                          geometric=True))
    result = train_model(TrainJob("clip", p, table, folds, d, tmp_path / "m", holdout=1), progress=False)
    assert len(result["history"]) == 2 and np.isfinite(result["best"]["val_log_loss"])
    assert TinyClipModel.seen and all(s[1:] == (3, T, 32, 32) for s in TinyClipModel.seen)
    assert load(tmp_path / "m" / "best.pt").spec["input"] == "clip"
    model = from_checkpoint(tmp_path / "m" / "best.pt")
    probs = score_table([model], table, d, tta=True)[model.name]
    assert probs.shape == (8,) and ((probs > 0) & (probs < 1)).all()
    with pytest.raises(ValueError, match="aligned_mixup pairs face crops"):
        train_model(TrainJob("x", ModelParams(arch=clip_model, aligned_mixup=True), table, folds, d, tmp_path / "x",
                    holdout=1), progress=False)
    assert isinstance(model, ScoringModel)
    crops_table = table.drop(columns="frames")
    with pytest.raises(ValueError, match="eats clips of 4 crops .* needs a clips table"):
        train_model(TrainJob("x", p, crops_table, folds, d, tmp_path / "x", holdout=1), progress=False)
    with pytest.raises(ValueError, match="holds clips of \\[3\\] crops"):
        train_model(TrainJob("x", p, table.assign(frames=3), folds, d, tmp_path / "x", holdout=1), progress=False)


def test_every_frame_of_a_clip_gets_the_same_augmentation(tmp_path):
    import albumentations as A

    from dfdc.data.clips import ClipDataset

    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (T, 24, 20, 3), dtype=np.uint8)
    w = ShardWriter(tmp_path / "c")
    for t in range(T):
        w.add(frame_key("k", t), encode_png(frames[t]))
    w.close()
    table = pd.DataFrame([{"key": "k", "label": 1, "shard": "shard_00000.npz", "frames": T}])
    ds = ClipDataset(table, tmp_path / "c", A.Compose([A.HorizontalFlip(p=0.5)], seed=0))
    outcomes = []
    for _ in range(20):
        x = ds[0]["x"]  # (T, H, W, 3)
        flipped = [np.array_equal(x[t], frames[t][:, ::-1]) for t in range(T)]
        kept = [np.array_equal(x[t], frames[t]) for t in range(T)]
        assert all(flipped) or all(kept)  # one draw for the whole clip, never a mix
        outcomes.append(flipped[0])
    assert any(outcomes) and not all(outcomes)
