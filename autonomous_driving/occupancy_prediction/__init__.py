"""BEVFormer-Occ, the camera-only 3D occupancy baseline (Occ3D-nuScenes): the model, data and
metric in ``bevformer_occ``, the published configs in ``projects/configs`` and the command-line
tools in ``tools``."""
