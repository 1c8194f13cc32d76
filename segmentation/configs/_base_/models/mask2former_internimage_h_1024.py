# The wide Mask2Former-H of the published COCO-Stuff/ADE20K configs: 200 queries and a
# 1024-d pixel decoder and transformer decoder (32 heads, 4096-d FFNs).
_base_ = ['./mask2former_internimage_h.py']
model = dict(
    decode_head=dict(
        feat_channels=1024,
        out_channels=1024,
        num_queries=200,
        pixel_decoder=dict(
            encoder=dict(
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=1024, num_heads=32),
                    ffn_cfg=dict(embed_dims=1024, feedforward_channels=4096))),
            positional_encoding=dict(num_feats=512)),
        positional_encoding=dict(num_feats=512),
        transformer_decoder=dict(
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=1024, num_heads=32),
                cross_attn_cfg=dict(embed_dims=1024, num_heads=32),
                ffn_cfg=dict(embed_dims=1024, feedforward_channels=4096)))))
