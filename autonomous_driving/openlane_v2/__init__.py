"""OpenLane-V2 topology baseline (ROAD_BEVFormer), driving_openlane.md.

Importable home of the code behind the published folder ``openlane-v2/`` (whose hyphen
makes it unimportable). The published devkit (``openlanev2``) does not install on
Python 3.11, so its parts live here as our own code: the OpenLane-V2 score
(``evaluate``, ``distance``) and the 3D-lane F-score (``f_score``), the data files
(``collection``: ``info/<timestamp>.json`` + ``data_dict_*.json`` to
``data_dict_<subset>_<split>.pkl``), the Bezier lane parameterisation (``bezier``) and
the submission pickle (``submission``). Modules import their dependencies themselves;
the metric needs only numpy, scipy and networkx.
"""
