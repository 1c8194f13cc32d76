# Argoverse 2 online-map data of the published VectorMapNet configs (mmengine form): the
# {train,val,test}_annotations.json files and the camera images, paths relative to the run's
# working directory (the published vectormapnet_intern.py had its authors' absolute paths).
# Published pipeline: VectorizeMap -> PolygonizeLocalMapBbox -> load -> resize to 256x455
# -> Normalize3D -> pad /32 (the published ego2img rescaling) -> FormatBundleMap + Collect3D.
# Normalize3D's mean / std / to_rgb are applied in the model's MultiViewDataPreprocessor.
dataset_type = 'AV2Dataset'
data_root = 'data/argoverse2/'
roi_size = (60, 30)
canvas_size = (200, 100)
coords_dim = 2
cat2id = dict(ped_crossing=0, divider=1, boundary=2)
num_class = max(list(cat2id.values())) + 1
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
img_h = 256
img_w = int((16 / 9 * 128) * 2)  # 455
img_size = (img_h, img_w)
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=False)
backend_args = None

train_pipeline = [
    dict(type='VectorizeMap', coords_dim=coords_dim, roi_size=roi_size, simplify=True, normalize=True),
    dict(type='PolygonizeLocalMapBbox', canvas_size=canvas_size, coord_dim=2, num_class=num_class,
         threshold=4 / 200),
    dict(type='LoadMultiViewImageFromFiles', color_type='unchanged', backend_args=backend_args),
    dict(type='ResizeMultiViewImages', size=img_size, change_intrinsics=True),
    dict(type='PadMultiViewImages', size_divisor=32, change_intrinsics=True),
    dict(type='PackMapInputs', keys=['img', 'polys', 'vectors'], meta_keys=['token', 'ego2img']),
]
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', color_type='unchanged', backend_args=backend_args),
    dict(type='ResizeMultiViewImages', size=img_size, change_intrinsics=True),
    dict(type='PadMultiViewImages', size_divisor=32, change_intrinsics=True),
    dict(type='PackMapInputs', keys=['img'], meta_keys=['token', 'ego2img']),
]

train_dataloader = dict(
    batch_size=5,  # samples_per_gpu
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='train_annotations.json',
        root_path='',  # image_path of each camera is relative to data_root
        pipeline=train_pipeline,
        cat2id=cat2id,
        roi_size=roi_size,
        meta=input_modality,
        interval=1))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='val_annotations.json',
        root_path='',
        pipeline=test_pipeline,
        cat2id=cat2id,
        roi_size=roi_size,
        meta=input_modality,
        interval=1,
        test_mode=True))
# the challenge's test split: annotations without map lines, for --split test --format-only
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='test_annotations.json',
        root_path='',
        pipeline=test_pipeline,
        cat2id=cat2id,
        roi_size=roi_size,
        meta=input_modality,
        interval=1,
        test_mode=True))

# Chamfer AP at 0.5 / 1.0 / 1.5 m against the evaluated dataset's own annotation file
val_evaluator = dict(type='VectorMapMetric', roi_size=roi_size)
test_evaluator = dict(type='VectorMapMetric', roi_size=roi_size)
