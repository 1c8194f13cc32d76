"""The published InternImage variants as small named configs (model.md's table)."""

from __future__ import annotations

# Architecture arguments of InternImage per variant letter.
VARIANTS: dict[str, dict] = {
    "t": dict(channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), layer_scale=None,
              offset_scale=1.0, post_norm=False, mlp_ratio=4.0),
    "s": dict(channels=80, depths=(4, 4, 21, 4), groups=(5, 10, 20, 40), layer_scale=1e-5,
              offset_scale=1.0, post_norm=True, mlp_ratio=4.0),
    "b": dict(channels=112, depths=(4, 4, 21, 4), groups=(7, 14, 28, 56), layer_scale=1e-5,
              offset_scale=1.0, post_norm=True, mlp_ratio=4.0),
    "l": dict(channels=160, depths=(5, 5, 22, 5), groups=(10, 20, 40, 80), layer_scale=1e-5,
              offset_scale=2.0, post_norm=True, mlp_ratio=4.0),
    "xl": dict(channels=192, depths=(5, 5, 24, 5), groups=(12, 24, 48, 96), layer_scale=1e-5,
               offset_scale=2.0, post_norm=True, mlp_ratio=4.0),
    "h": dict(channels=320, depths=(6, 6, 32, 6), groups=(10, 20, 40, 80), layer_scale=None,
              offset_scale=1.0, post_norm=False, mlp_ratio=4.0, dw_kernel_size=5, res_post_norm=True,
              level2_post_norm=True, level2_post_norm_block_ids=(5, 11, 17, 23, 29),
              center_feature_scale=True, use_clip_projector=True),
    "g": dict(channels=512, depths=(2, 2, 48, 4), groups=(16, 32, 64, 128), layer_scale=None,
              offset_scale=1.0, post_norm=True, mlp_ratio=4.0, dw_kernel_size=5,
              level2_post_norm=True, level2_post_norm_block_ids=tuple(range(5, 48, 6)),
              center_feature_scale=True, use_clip_projector=True),
}
