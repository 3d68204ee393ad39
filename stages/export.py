"""DVC stage `export`: the evaluated ensemble as one bundle file (`dfdc export`), declared as a DVC artifact."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dfdc.inference.bundle import write_bundle


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ensemble", default="models/ensemble.json")
    ap.add_argument("--out", default="models/detector.dfdc")
    args = ap.parse_args()
    try:
        manifest = write_bundle(args.out, ensemble_file=args.ensemble)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    members = ", ".join(f"{m['name']} {m['weight']:.3g}" for m in manifest["members"])
    print(f"export: {members} ({manifest['ensemble']['method']} weights, strategy "
          f"{manifest['ensemble']['strategy']}) -> {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
