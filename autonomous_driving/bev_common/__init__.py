"""Pieces the driving baselines share, one copy each: the InternImage registration, the
BEVFormer encoder blocks, GridMask, the multi-view transforms and data preprocessor.
Each module registers its classes when imported."""
