"""The three driving baselines on today's OpenMMLab (driving.md): the shared BEV stack in
``bev_common`` and one folder per baseline."""
