"""VectorMapNet online HD-map baseline (Argoverse 2), driving_hdmap.md.

Importable home of the code behind the published folder ``Online-HD-Map-Construction/``
(whose hyphens make it unimportable): the Chamfer-AP metric (``chamfer_ap``,
``vector_eval``), the annotation / submission files (``annotations``, ``submission``),
the pure-numpy map vectorisation of the data pipeline (``vectorize``), and plain-torch
model pieces: the generator's token arithmetic (``tokens``), its causal decoder
(``causal_decoder``), the condition noise (``noise``), the IPM geometry and ``Upsample``
(``ipm``), the BEV neck and the detector's top-k selection (``heads_common``). The
metric and data modules import no torch or mmdet.
"""
