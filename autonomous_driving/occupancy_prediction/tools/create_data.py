"""Dataset preparation (published command line):

    python tools/create_data.py occ --root-path ./data/occ3d-nus --out-dir ./data/occ3d-nus \\
        --extra-tag occ --version v1.0-trainval --canbus ./data --occ-path ./data/occ3d-nus

writes ``<out-dir>/<extra-tag>_infos_temporal_{train,val}.pkl`` (``_test`` for v1.0-test)
from the raw nuScenes tables, the CAN bus expansion (``<canbus>/can_bus/``) and Occ3D's
``annotations.json`` (``bevformer_occ.create_data.create_occ_infos``). nuscenes-devkit is an
optional dependency (``pip install --no-deps nuscenes-devkit==1.2.0``)."""

from __future__ import annotations

import dense_common.quiet  # noqa: F401 - first: filters the stack's import-time warnings

# isort: split

import argparse

DATASETS = ("occ",)
VERSIONS = ("v1.0-trainval", "v1.0-test", "v1.0-mini")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build the BEVFormer-Occ info files.")
    parser.add_argument("dataset", choices=DATASETS, help="the dataset to prepare (occ: Occ3D-nuScenes)")
    parser.add_argument("--root-path", required=True, help="the nuScenes root (<root>/<version>/, samples/)")
    parser.add_argument("--out-dir", required=True, help="where the info pkls go")
    parser.add_argument("--extra-tag", default="occ", help="file prefix (occ -> occ_infos_temporal_*.pkl)")
    parser.add_argument("--version", default="v1.0-trainval", choices=VERSIONS)
    parser.add_argument("--canbus", default="./data", help="the folder holding can_bus/")
    parser.add_argument("--occ-path", help="the folder of Occ3D's annotations.json (default --root-path)")
    parser.add_argument("--max-sweeps", type=int, default=10, help="lidar sweeps listed per key frame")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    if args.max_sweeps < 0:
        raise SystemExit(f"error: --max-sweeps must be >= 0, got {args.max_sweeps}")
    from autonomous_driving.occupancy_prediction.bevformer_occ.create_data import create_occ_infos

    try:
        paths = create_occ_infos(args.root_path, args.out_dir, extra_tag=args.extra_tag, version=args.version,
                                 canbus_root=args.canbus, occ_path=args.occ_path or args.root_path,
                                 max_sweeps=args.max_sweeps)
    except (ImportError, FileNotFoundError, ValueError) as error:  # the converter's own one-line messages
        raise SystemExit(f"error: {error}") from None
    for path in paths:
        print(f"wrote {path}")
    return [str(p) for p in paths]


if __name__ == "__main__":
    main()
