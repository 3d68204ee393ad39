"""dfdc: a reproducible deepfake-detection pipeline. ``from dfdc import Detector`` scores videos (:mod:`dfdc.api`)."""

__version__ = "0.1.0"
__all__ = ["Detector", "Result", "__version__"]


def __getattr__(name: str):
    if name in ("Detector", "Result"):  # loaded on first use: `import dfdc` stays light for the stages
        from dfdc import api

        return getattr(api, name)
    raise AttributeError(f"module 'dfdc' has no attribute {name!r}")
