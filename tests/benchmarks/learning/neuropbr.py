"""neuropbr: albedo PSNR of the teacher against the mean training maps (trivial), with every map's
PSNR / MAE and the normal angle, the mean of the three views as albedo, the flat normal, and the
classical photometric-stereo normal (``neuropbr.utils.photometric``, from the views and the known
lights) beside it.

Both folders hold real materials (``<material>/{albedo,roughness,metallic,normal}.png``). The package
renders them into three views with its own renderer (``python -m neuropbr.utils.make_dataset``: each
material whole plus random crops, as the README's real-data recipe says); training runs the teacher's
``train.py`` on the rendered training materials, validating on one held-out training material (the split
is by material) and choosing ``best_model.pth`` on it. Evaluation renders the evaluation materials the
same way (other crops, another seed) and scores the model with the package's ``MetricAccumulator``, and
the baselines with the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.benchmarks.learning.core import (
    Adapter,
    Curve,
    Evaluation,
    TrainCommand,
    first_file,
    package_dir,
    tensorboard_curve,
)

PACKAGE = "neuropbr"
# The recommended CPU recipe (README, "Recommended recipe on real materials").
SIZE = 64
TRAIN_CROPS = 24
EVAL_CROPS = 8
EVAL_SEED = 1
# The training crops' relief is scaled by a factor drawn in this range: the training materials are nearly
# flat (mean normal 0.1-7 degrees from flat at 64 px), so without it a run learns that normals are flat.
TRAIN_RELIEF = (1.0, 4.0)
RECIPE = ["--config", "real_cpu", "--image-size", str(SIZE), "--batch-size", "4"]
METRICS = ("psnr_albedo", "psnr_roughness", "psnr_metallic", "psnr_normal", "mae_albedo", "mae_roughness",
           "mae_metallic", "mae_normal", "normal_angle_mean", "normal_angle_median")
GRID_ROWS = 4


def render_dataset(materials: Path, root: Path, crops: int, seed: int,
                   relief: tuple[float, float] = (1.0, 1.0)) -> Path:
    """The package's renderer over ``materials`` into ``root`` (input/ + output/); skipped if done."""
    from neuropbr.utils.make_dataset import material_folders, write_dataset_from_materials

    if not (root / "input" / "render_metadata.json").is_file():
        write_dataset_from_materials(material_folders(materials), root, SIZE, dirty=False, seed=seed, crops=crops,
                                     relief=relief)
    return root


def _image(x) -> np.ndarray:
    """A ``(C, H, W)`` map in [0, 1] (1 or 3 channels) as ``H×W×3`` uint8."""
    a = x.detach().float().clamp(0, 1).cpu().numpy()
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    return (a.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)


class NeuroPBRAdapter(Adapter):
    package = PACKAGE
    main_metric = "psnr_albedo"
    higher_is_better = True
    trivial_baseline = "mean_maps"
    classical_baseline = "photometric_stereo"

    def train_command(self, train_dir: Path, work: Path, minutes: float, device: str) -> TrainCommand:
        data = render_dataset(train_dir, work / "data", TRAIN_CROPS, seed=0, relief=TRAIN_RELIEF)
        argv = ["train.py", *RECIPE, "--input-dir", str(data / "input"), "--output-dir", str(data / "output"),
                "--checkpoint-dir", str(work / "checkpoints"), "--max-minutes", f"{minutes:g}", "--device", device,
                "--tracker", "tensorboard", "--overwrite"]
        return TrainCommand(argv, package_dir(PACKAGE))

    def best_checkpoint(self, work: Path) -> Path:
        return first_file(work / "checkpoints" / "best_model.pth", work / "checkpoints" / "latest.pth")

    def curve(self, work: Path) -> Curve:
        return tensorboard_curve(work / "checkpoints" / "logs", "val/psnr_albedo",
                                 {"mean maps (validation material)": "val/psnr_albedo_mean_maps"})

    def evaluate(self, checkpoint: Path, eval_dir: Path, work: Path, device: str) -> Evaluation:
        import torch

        from neuropbr.data import build_dataset
        from neuropbr.inference import load_generator
        from neuropbr.maps import maps_for_display, tensor_to_maps
        from neuropbr.train import constant_maps, flat_normal_like, mean_maps
        from neuropbr.utils.metrics import MetricAccumulator
        from neuropbr.utils.photometric import photometric_stereo
        from shared.device import resolve_device

        dev = resolve_device(device)
        model, cfg = load_generator(checkpoint, dev)
        # The mean training maps: over every rendered training item (the whole materials and their crops).
        train_cfg = cfg.__class__.from_dict(cfg.to_dict())
        train_cfg.data.synthetic = False
        train_cfg.data.input_dir, train_cfg.data.output_dir = str(work / "data" / "input"), str(work / "data" / "output")
        train_cfg.data.metadata_path = None
        train_set = build_dataset(train_cfg)
        means = mean_maps(train_set, list(range(len(train_set))), limit=len(train_set))

        data = render_dataset(eval_dir, work / "eval_data", EVAL_CROPS, seed=EVAL_SEED)
        cfg.data.synthetic, cfg.data.metadata_path = False, None
        cfg.data.input_dir, cfg.data.output_dir = str(data / "input"), str(data / "output")
        dataset = build_dataset(cfg)
        methods = ("model", "mean_maps", "views_mean", "flat_normal", "photometric_stereo")
        accs = {name: MetricAccumulator() for name in methods}
        std = torch.tensor(cfg.transform.std).view(1, 3, 1, 1)
        mean = torch.tensor(cfg.transform.mean).view(1, 3, 1, 1)
        # The whole materials come first in each material's run of samples; show those, then crops.
        firsts = [i for i, key in enumerate(dataset.group_keys) if i == 0 or dataset.group_keys[i - 1] != key]
        shown = (firsts + [i for i in range(len(dataset)) if i not in firsts])[:GRID_ROWS]
        grid = []
        with torch.no_grad():
            for i in range(len(dataset)):
                inputs, targets = dataset[i]
                target = tensor_to_maps(targets[None])
                pred = {k: v.float().cpu() for k, v in model(inputs[None].to(dev)).items()}
                views = (inputs * std + mean).clamp(0, 1)
                guess = constant_maps(means, target)
                views_mean = guess | {"albedo": views.mean(dim=0, keepdim=True)}
                flat = guess | {"normal": flat_normal_like(target["normal"])}
                stereo = guess | {"normal": photometric_stereo(views[None])}
                for name, maps in (("model", pred), ("mean_maps", guess), ("views_mean", views_mean), ("flat_normal", flat),
                                   ("photometric_stereo", stereo)):
                    accs[name].update(maps, target)
                if i in shown:
                    p, t, g = maps_for_display(pred), maps_for_display(target), maps_for_display(guess)
                    grid.append([
                        ("view 0", _image(views[0])), ("view 1", _image(views[1])), ("view 2", _image(views[2])),
                        ("mean maps albedo", _image(g["albedo"][0])), ("views mean", _image(views_mean["albedo"][0])),
                        ("model albedo", _image(p["albedo"][0])), ("target albedo", _image(t["albedo"][0])),
                        ("model rough.", _image(p["roughness"][0])), ("target rough.", _image(t["roughness"][0])),
                        ("model normal", _image(p["normal"][0])),
                        ("photometric normal", _image(maps_for_display(stereo)["normal"][0])),
                        ("target normal", _image(t["normal"][0])),
                    ])
        metrics = {}
        for name, acc in accs.items():
            values = acc.compute()
            normal_only = name in ("flat_normal", "photometric_stereo")
            keep = [k for k in METRICS if k.endswith("normal") or k.startswith("normal_")] if normal_only else METRICS
            metrics[name] = {k: float(values[k]) for k in keep}
        materials = sorted(set(dataset.group_keys))
        notes = {
            "eval_materials": materials, "eval_samples_per_material": 1 + EVAL_CROPS, "size": SIZE,
            "train_crops_per_material": TRAIN_CROPS, "views": "rendered by neuropbr.utils.render (DEFAULT_SETUPS)",
            "mean_maps": "per-channel mean over the training items (normal: mean vector, renormalised)",
            "views_mean": "mean of the three views as albedo; the other maps from mean_maps",
            "flat_normal": "normal (0, 0, 1); normal metrics only",
            "photometric_stereo": "Lambertian photometric stereo from the three views and the renderer's lights "
                                  "(neuropbr.utils.photometric, damped tilt); normal metrics only",
        }
        return Evaluation(metrics, grid, len(dataset), notes)


ADAPTER = NeuroPBRAdapter()
