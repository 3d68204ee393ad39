"""Column layouts of the preprocessing tables."""

LANDMARK_COLUMNS = [f"l{a}{i}" for i in range(5) for a in "xy"]  # lx0, ly0, ..., lx4, ly4
FACE_COLUMNS = ["video", "frame", "face", "track", "x1", "y1", "x2", "y2", "score", *LANDMARK_COLUMNS]
CROP_COLUMNS = ["key", "video", "original", "frame", "track", "label", "shard",
                "x1", "y1", "x2", "y2", "score", *LANDMARK_COLUMNS]
# fake crops' SSIM diff masks: the shard holding the mask ('' when none), its mean / 255, why there is none
MASK_COLUMNS = ["mask", "mask_mean", "mask_error"]
