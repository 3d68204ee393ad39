"""DVC stage `sample`: build the built-in sample dataset in DFDC layout."""
from __future__ import annotations

import argparse

from dfdc.config.sample import SampleParams
from dfdc.datasets.sample import make_sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/sample")
    args = ap.parse_args()
    p = SampleParams.load(args.params)
    s = make_sample(args.out, seed=p.seed, parts=p.parts, reals_per_part=p.reals_per_part,
                    fakes_per_real=p.fakes_per_real, seconds=(p.seconds_min, p.seconds_max), workers=p.workers)
    print(f"sample: {s.reals} real + {s.fakes} fake videos in {s.parts} parts, "
          f"{s.identities} identities, {s.frames} frames -> {args.out}")


if __name__ == "__main__":
    main()
