"""Registers the shared InternImage backbone and layer-decay constructor in mmseg's
registries (mmseg configs run under ``default_scope='mmseg'``)."""

from mmseg.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS

from dense_common import CustomLayerDecayOptimizerConstructor, InternImageBackbone

# The published configs spell the type ``InternImage``; the class stays the shared one.
# force=True: the classes live in dense_common, so registering them again (this package
# imported under a second module path) is the same registration, not a clash.
InternImage = MODELS.register_module(name="InternImage", module=InternImageBackbone, force=True)
OPTIM_WRAPPER_CONSTRUCTORS.register_module(module=CustomLayerDecayOptimizerConstructor, force=True)

__all__ = ["CustomLayerDecayOptimizerConstructor", "InternImage"]
