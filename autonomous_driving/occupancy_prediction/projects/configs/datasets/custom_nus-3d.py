# Occ3D-nuScenes for the BEVFormer-Occ configs (published dataset base, mmengine form): the
# NuSceneOcc dataset over data/occ3d-nus/ (occ_infos_temporal_{train,val}.pkl from
# `tools/create_data.py occ`, labels in gts/<scene>/<token>/labels.npz), the multi-view
# pipelines and the Occ3D metric. Normalisation and /32 padding happen in the model's
# MultiViewDataPreprocessor; the published box transforms (LoadAnnotations3D,
# ObjectRangeFilter, ObjectNameFilter) fed nothing the occupancy loss reads and are left out.
dataset_type = 'NuSceneOcc'
data_root = 'data/occ3d-nus/'
occ_gt_data_root = 'data/occ3d-nus'
backend_args = None

# the 10 nuScenes detection classes: only the (dead) box fields used them
class_names = [
    'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
    'pedestrian', 'traffic_cone'
]
input_modality = dict(use_lidar=False, use_camera=True, use_radar=False, use_map=False, use_external=True)
occ_keys = ['img', 'voxel_semantics', 'mask_lidar', 'mask_camera']

train_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, backend_args=backend_args),
    dict(type='PhotoMetricDistortionMultiViewImage'),
    dict(type='LoadOccGTFromFile', data_root=occ_gt_data_root, backend_args=backend_args),
    dict(type='PackMultiViewInputs', keys=occ_keys),
]
# the GT is loaded at test time too: the metric reads it from the data samples
test_pipeline = [
    dict(type='LoadMultiViewImageFromFiles', to_float32=True, backend_args=backend_args),
    dict(type='LoadOccGTFromFile', data_root=occ_gt_data_root, backend_args=backend_args),
    dict(type='PackMultiViewInputs', keys=occ_keys),
]

train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=data_root + 'occ_infos_temporal_train.pkl',
        pipeline=train_pipeline,
        classes=class_names,
        modality=input_modality,
        test_mode=False,
        use_valid_flag=True,
        box_type_3d='LiDAR'))
# test batches are single frames in dataset (time) order: the model carries the previous
# frame's BEV from one sample to the next, so each process takes one contiguous block
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='ContiguousSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file=data_root + 'occ_infos_temporal_val.pkl',
        pipeline=test_pipeline,
        classes=class_names,
        modality=input_modality,
        test_mode=True,
        box_type_3d='LiDAR'))
test_dataloader = val_dataloader

# published evaluate_miou: camera mask on; Metric_FScore parameters for --eval_fscore
val_evaluator = dict(
    type='OccMetric',
    num_classes=18,
    use_image_mask=True,
    eval_fscore=False,
    voxel_size=[0.4, 0.4, 0.4],
    pc_range=[-40, -40, -1.0, 40, 40, 5.4],
    void=[17, 255],
    threshold_acc=0.4,
    threshold_complete=0.4,
    leaf_size=10)
test_evaluator = val_evaluator
