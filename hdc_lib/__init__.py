"""hdc_lib: HDC and DCLR, self-supervised video representation learning, from the equations to a
training run. Its modules, in the order data flows through them (each imports only modules above
it; tests/test_imports.py checks that):

errors, config       a bad input as one line naming its file and key; typed configs from YAML
data/                video_io (PyAV in and out) · splits (UCF101 / HMDB51 files, class folders) ·
                     cache (decoded videos on disk) · samplers (which frames make a clip) ·
                     datasets (one item: a video's clips) · check (`hdc data check`) ·
                     toyworld (the rendered toy dataset, its manifest and masks)
augment              batched per-sample spatial augmentation; the eval transform
views                HDC's views v1, v2, v3 and the temporal reorderings of a clip
precision            what the backbone computes in (`train.precision`)
backbones, heads     tiny 3D ResNet and torchvision's video ResNets with per-stage taps;
                     projection heads
receptive_field      a stage's theoretical field, and one unit's input gradient
losses               InfoNCE (batch, queue, gathered keys, hard negatives, extra positives), NT-Xent
moco                 key queues, the momentum encoder, cross-rank gather, shuffle BN
contrastive          what the methods share: encoders, the `contrast` term and its logs
coupled, hdc, dclr   the three contrastive methods, each with its config
supervised           the supervised reference (and its one-frame control)
experiment           a run's config and the builders: method, dataset, optimiser
checkpoint, runtime  atomic, safe checkpoints; device, rank and process group
features, train      frozen video features and the kNN monitor; the one training loop
evaluate, probes     linear probe, retrieval, fine-tuning; the toy world's factor probes
viz                  figures
stats, provenance    means and intervals over seeds, claims; commit and machine of a result
reproduce            `hdc reproduce`: the ablations on the toy world, tables and figures
shipped_weights      the trained weights that ship: export, manifest, checked loading
trained_models       where a notebook's trained model comes from (`find_or_train`)
bench/               `hdc bench`: the pipeline measured against its limits, one module per row
notebook             what the teaching notebooks set up first: mode, world, seed, device, style
cli, __main__        the `hdc` command (`python -m hdc_lib`)
"""
