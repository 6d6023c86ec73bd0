"""Real materials on a CPU in minutes (the learning benchmark's recipe; see the README's numbers).

A ResNet18 teacher without the GAN (it adds nothing a few hundred steps can use), a constant learning
rate (a run stopped by ``--max-minutes`` never reaches a cosine schedule's end), one material in five
held out for validation, and the normal-angle term at 1.0 (spec 0.5): normals are what a short run
learns last. The benchmark runs it at ``--image-size 64 --batch-size 4`` on
``python -m neuropbr.utils.make_dataset MATERIALS ROOT --size 64 --crops 24 --relief 1 4``.

``model.photometric_input``: the classical photometric-stereo normal of the three views (their lights are
the renderer's, known) goes into the model, and the normal head gates its tilt and adds a residual. Without
it a run of this length does not get the normal below the flat normal's error on held-out materials.
"""

from neuropbr.train_config import TrainConfig


def get_config() -> TrainConfig:
    cfg = TrainConfig()
    m, d, t, o, loss = cfg.model, cfg.data, cfg.training, cfg.optimizer, cfg.loss
    m.encoder_backbone, m.encoder_stride = "resnet18", 2
    m.transformer_dim, m.transformer_num_heads, m.transformer_depth = 256, 8, 2
    m.decoder_channels = [256, 128, 64, 32, 16]
    m.use_gan, loss.w_gan = False, 0.0
    m.photometric_input = True
    loss.w_normal = loss.w_normal_map = 1.0
    d.image_size, d.batch_size, d.num_workers, d.val_ratio = 64, 4, 0, 0.2
    d.pin_memory = d.persistent_workers = False
    o.g_lr, o.scheduler = 3e-4, "none"
    t.epochs, t.use_amp = 10_000, False
    t.save_every_n_epochs, t.log_images_every_n_epochs, t.log_every_n_steps = 0, 10, 5
    return cfg
