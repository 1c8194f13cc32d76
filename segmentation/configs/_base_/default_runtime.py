# mmseg's runtime (default scope, logging, visualizer, SegTTAModel) plus this project's
# plugin: the InternImage backbone, layer-decay constructor and extra datasets.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(imports=['mmseg_custom'], allow_failed_imports=False)
