"""Clip models beside frame models: trained on the clips stage's output, scored by predict@ and by `dfdc predict`."""
import json

import numpy as np
import pytest

from dfdc.cli import main
from dfdc.config.clips import ClipsParams
from dfdc.config.predict import PredictParams
from dfdc.config.train import AugmentParams, ModelParams
from dfdc.preprocess.cut import clip_videos
from dfdc.video import read_frames, write_video

CLIPS = ClipsParams(window=4, stride=2, per_track=2, size=32, codec="mp4")
NO_AUGMENT = AugmentParams(jpeg=False, noise=False, blur=False, hflip=True, color=False, gray=False, geometric=False)


@pytest.fixture(scope="module")
def tiny_clips(tiny_prep, tmp_path_factory):
    out = tmp_path_factory.mktemp("clips") / "clips"
    clips, status = clip_videos(tiny_prep["index"], tiny_prep["faces"], out, window=CLIPS.window,
                                stride=CLIPS.stride, per_track=CLIPS.per_track, size=CLIPS.size, codec=CLIPS.codec,
                                workers=1, progress=False)
    assert status["ok"].all()
    return clips, out


@pytest.fixture(scope="module")
def clip_checkpoint(tiny_prep, tiny_clips, tmp_path_factory):
    """best.pt of an r3d_mini trained 2 epochs on the tiny sample's clips, with CutMix and codec augmentation."""
    from dfdc.train.loop import TrainJob, train_model

    clips, clips_dir = tiny_clips
    out = tmp_path_factory.mktemp("models") / "clip"
    p = ModelParams(arch="r3d_mini", input_size=32, epochs=2, batch_size=8, augment=NO_AUGMENT, cutmix=0.5,
                    codec_augment=0.5)
    result = train_model(TrainJob("clip", p, clips, tiny_prep["folds"], clips_dir, out,
                         preprocess={"detect": tiny_prep["preprocess"]["detect"], "clips": CLIPS.provenance()},
                         data_info=tiny_prep["data"]), progress=False)
    assert len(result["history"]) == 2 and np.isfinite(result["best"]["val_log_loss"])
    return out / "best.pt"


def test_clip_checkpoint_eats_the_clips_shape_and_scores_the_holdout_by_window_means(tiny_prep, tiny_clips,
                                                                                     clip_checkpoint):
    from dfdc.eval.holdout import holdout_videos, score_holdout
    from dfdc.inference.scorer import from_checkpoint

    clips, clips_dir = tiny_clips
    model = from_checkpoint(clip_checkpoint)
    assert (model.spec.input, model.spec.clip_len, model.spec.frame_stride) == ("clip", 4, 2)
    videos = holdout_videos(tiny_prep["folds"], 0)
    scoring = PredictParams(strategy="confident", tta=False, batch_size=8)
    scored, rows, fit = score_holdout(model, clips, videos, clips_dir, scoring=scoring, device="cpu")
    assert fit is None and len(scored) == len(videos)
    for v in scored.itertuples():  # the most fake track's mean of windows
        r = rows[rows["video"] == v.video]
        assert v.prob == pytest.approx(r.groupby("track")["prob"].mean().max())


def test_dfdc_predict_scores_clip_and_frame_models_together(tiny_sample, tiny_checkpoint, clip_checkpoint,
                                                           tmp_path, capsys):
    src = sorted(tiny_sample.glob("dfdc_train_part_0/*.mp4"))[0]
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "full.mp4").write_bytes(src.read_bytes())
    frames, _ = read_frames(src)
    write_video(videos / "short.mp4", [frames[i] for i in range(5)], 25)  # 5 frames: a window needs 7
    rep = tmp_path / "report"
    code = main(["predict", str(videos), "-o", str(tmp_path / "sub.csv"), "--models", str(tiny_checkpoint),
                 str(clip_checkpoint), "--frames", "12", "--clip-windows", "3", "--device", "cpu",
                 "--report", str(rep)])
    assert code == 0
    full = json.loads((rep / "full.mp4.json").read_text())
    assert set(full["model_probs"]) == {"tiny", "clip"} and full["reason"] == "" and full["note"] == ""
    assert full["prob"] == pytest.approx(np.mean(list(full["model_probs"].values())), abs=1e-6)
    short = json.loads((rep / "short.mp4.json").read_text())
    assert set(short["model_probs"]) == {"tiny"} and short["reason"] == ""
    assert "scored without clip: no face track spans one clip of 4 frames (7 video frames)" in short["note"]
    assert short["prob"] == pytest.approx(short["model_probs"]["tiny"])
    assert "1 without their clip models" in capsys.readouterr().out
    # an ensemble of clip models only: the short video gets 0.5 and the reason
    code = main(["predict", str(videos), "-o", str(tmp_path / "clip.csv"), "--models", str(clip_checkpoint),
                 "--frames", "12", "--device", "cpu", "--report", str(tmp_path / "r2")])
    assert code == 0
    short = json.loads((tmp_path / "r2" / "short.mp4.json").read_text())
    assert short["prob"] == 0.5 and short["reason"].startswith("clip: no face track spans one clip")
    only = json.loads((tmp_path / "r2" / "full.mp4.json").read_text())
    assert set(only["model_probs"]) == {"clip"} and 0 < only["prob"] < 1


def test_a_frame_model_refuses_clips_and_a_clip_model_refuses_crops(tiny_prep, tiny_clips, tmp_path):
    from dfdc.train.loop import TrainJob, train_model

    clips, clips_dir = tiny_clips
    with pytest.raises(ValueError, match="resnet18 eats single crops"):
        train_model(TrainJob("x", ModelParams(arch="resnet18", input_size=32, epochs=1), clips, tiny_prep["folds"],
                    clips_dir, tmp_path / "x"), progress=False)
    with pytest.raises(ValueError, match="needs a clips table"):
        train_model(TrainJob("x", ModelParams(arch="r3d_mini", input_size=32, epochs=1), tiny_prep["crops"],
                    tiny_prep["folds"], tiny_prep["crops_dir"], tmp_path / "y"), progress=False)
    with pytest.raises(ValueError, match="codec_augment re-encodes clips"):
        train_model(TrainJob("x", ModelParams(arch="resnet18", input_size=32, epochs=1, codec_augment=0.5),
                    tiny_prep["crops"], tiny_prep["folds"], tiny_prep["crops_dir"], tmp_path / "z"), progress=False)
