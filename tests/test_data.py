"""Dataset registry, splits, loaders on tiny fake layouts, synthetic shapes, real CIFAR-10 folders, data check."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader, random_split

from cassle.data import (
    DATASETS,
    CorruptImageError,
    DatasetNotFoundError,
    SyntheticShapes,
    check_roots,
    collate_images,
    format_check_table,
    get_dataset,
    list_datasets,
    load_pretrain,
)
from cassle.data.catalog import imagenet100_classes
from cassle.data.detection import voc_target
from cassle.data.splits import RandomCarve, ShuffledSplit, StratifiedCarve

CIFAR10_ORDER = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# name: (num_classes, metric) as in the paper's Table 6 and the authors' choices (class_avg / r2).
EXPECTED = {
    "imagenet100": (100, "top1"), "imagenet1k": (1000, "top1"), "stl10": (10, "top1"), "cifar10": (10, "top1"),
    "cifar100": (100, "top1"),
    "food101": (101, "top1"), "mit67": (67, "top1"), "pets": (37, "class_avg"), "flowers": (102, "class_avg"),
    "caltech101": (101, "class_avg"), "cars": (196, "top1"), "aircraft": (100, "class_avg"), "dtd": (47, "top1"),
    "sun397": (397, "top1"), "cub200": (200, "top1"), "300w": (136, "r2"), "voc2007": (20, "ap"),
    "synthetic": (16, "top1"), "synthetic_shape": (4, "top1"), "synthetic_color": (4, "top1"),
}  # fmt: skip
PRETRAIN = {"imagenet100", "imagenet1k", "stl10", "cifar10", "cifar100", "synthetic", "folder"}
TABLE6 = {"cifar10", "cifar100", "food101", "mit67", "pets", "flowers", "caltech101", "cars", "aircraft", "dtd",
          "sun397", "cub200", "300w", "stl10"}  # fmt: skip


# ----------------------------------------------------------------------------------------------- fake layouts
def _image_bytes(color: tuple[int, int, int], fmt: str = "JPEG", size: int = 6) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, fmt)
    return buffer.getvalue()


JPEG = _image_bytes((200, 30, 30))
PNG = _image_bytes((30, 30, 200), "PNG")


def make_class_folders(split_dir: Path, counts: dict[str, int], data: bytes = JPEG, ext: str = ".jpg") -> None:
    """split_dir/<class>/<i>.jpg with `counts[class]` identical tiny images per class."""
    for name, count in counts.items():
        (split_dir / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (split_dir / name / f"{i:04d}{ext}").write_bytes(data)


def paths(dataset) -> list[Path]:
    return [path for path, _ in dataset.samples]


# ----------------------------------------------------------------------------------------------- registry
def test_registry_names_classes_metrics_and_kinds():
    for name, (num_classes, metric) in EXPECTED.items():
        spec = get_dataset(name)
        assert (spec.name, spec.num_classes, spec.metric) == (name, num_classes, metric)
    assert set(list_datasets("pretrain")) == PRETRAIN
    assert TABLE6 <= set(list_datasets("downstream"))
    assert list_datasets("detection") == ["voc2007"]
    assert set(list_datasets()) == set(DATASETS) == set(EXPECTED) | {"folder"}
    for spec in DATASETS.values():
        if "train" in spec.sizes and "val" in spec.sizes:
            assert spec.sizes["train"] + spec.sizes["val"] == spec.sizes["trainval"], spec.name


def test_registry_rejects_unknown_names_kinds_splits_and_options(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar11'.*cifar10"):
        get_dataset("cifar11")
    with pytest.raises(ValueError, match=r"unknown dataset kind 'segmentation'.*pretrain"):
        list_datasets("segmentation")
    with pytest.raises(ValueError, match=r"no split 'val'.*train, test"):
        get_dataset("voc2007").load(tmp_path, "val")
    with pytest.raises(ValueError, match=r"does not take option\(s\) colour.*size"):
        get_dataset("synthetic").load(None, "train", colour=True)


def test_imagenet100_list_is_cmc_order():
    wnids = imagenet100_classes()
    assert len(wnids) == len(set(wnids)) == 100
    assert wnids[:10] == ("n02869837", "n01749939", "n02488291", "n02107142", "n13037406", "n02091831",
                          "n04517823", "n04589890", "n03062245", "n01773797")  # fmt: skip
    assert wnids[-1] == "n02090622" and all(w.startswith("n") and len(w) == 9 for w in wnids)


# What the workflow plan does (Snakemake builds its DAG from it): specs, kinds, layout checks, roots.
PLANNING = """
import sys
from pathlib import Path

import os
from cassle.data import DATASETS, get_dataset, list_datasets
from cassle.data.roots import ENV_VAR, root_from_environment, roots_to_environment

folders, pickled, empty = (Path(arg) for arg in sys.argv[1:])
for name in list_datasets():
    spec = get_dataset(name)
    assert spec.image_size > 0 and spec.kinds and spec.metric and spec.short and spec.sizes is not None, name
    try:
        spec.check_root(empty)
    except FileNotFoundError:  # DatasetNotFoundError: the layout is not there
        pass
assert "cifar10" in list_datasets("pretrain")
assert DATASETS["cifar10"].check_root(folders) == {"train": 20, "test": 10}
assert DATASETS["cifar10"].check_root(pickled) == {}
os.environ[ENV_VAR] = roots_to_environment({"cifar10": folders})
assert root_from_environment("cifar10") == folders
heavy = sorted({module.split(".")[0] for module in sys.modules} & {"torch", "torchvision", "PIL", "numpy"})
assert not heavy, f"planning imported {heavy}"
"""


def test_registry_and_layout_checks_import_no_torch(tmp_path):
    make_class_folders(tmp_path / "folders" / "train", {name: 2 for name in CIFAR10_ORDER})
    make_class_folders(tmp_path / "folders" / "test", {name: 1 for name in CIFAR10_ORDER})
    (tmp_path / "pickled" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    roots = [str(tmp_path / name) for name in ("folders", "pickled", "empty")]
    done = subprocess.run([sys.executable, "-c", PLANNING, *roots], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ----------------------------------------------------------------------------------------------- missing roots
@pytest.mark.parametrize("name", ["cifar10", "imagenet100", "food101", "mit67", "flowers", "sun397", "300w", "voc2007"])
def test_missing_root_names_dataset_root_layout_and_config_key(tmp_path, name):
    spec = get_dataset(name)
    for root, problem in ((tmp_path / "absent", "does not exist"), (None, "no data root"), (tmp_path, "missing")):
        with pytest.raises(DatasetNotFoundError) as caught:
            spec.load(root, "test")
        message = str(caught.value)
        assert f"dataset '{name}'" in message and problem in message
        assert spec.layout in message and f"data_roots.{name}" in message and "data_root=" in message
        if root is not None:
            assert str(root) in message
    assert isinstance(caught.value, FileNotFoundError)


def test_torchvision_refusal_becomes_dataset_not_found(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()  # present but empty: torchvision's integrity check fails
    expected = r"(?s)CIFAR10 cannot read it: Dataset not found or corrupted\. \(tried root .*data_roots\.cifar10"
    with pytest.raises(DatasetNotFoundError, match=expected):
        get_dataset("cifar10").load(tmp_path, "train")


# ----------------------------------------------------------------------------------------------- splits
def test_random_carve_matches_torch_random_split_and_is_a_partition():
    carve = RandomCarve(50, seed=43, pool=500)
    train, val = carve.indices(500)
    reference = random_split(range(500), [450, 50], generator=torch.Generator().manual_seed(43))
    assert (train, val) == (sorted(reference[0].indices), sorted(reference[1].indices))
    assert carve.indices(500) == (train, val)
    assert not set(train) & set(val) and sorted(train + val) == list(range(500))
    assert RandomCarve(0.1, seed=42).indices(1001)[1].__len__() == 100
    with pytest.raises(ValueError, match="has 499 images, expected 500"):
        carve.indices(499)


def test_stratified_carve_per_class_counts():
    targets = [label for label in range(5) for _ in range(12)]
    train, val, rest = StratifiedCarve(val_per_class=2, train_per_class=7, seed=0).indices(targets)
    for label in range(5):
        assert [sum(targets[i] == label for i in part) for part in (train, val, rest)] == [7, 2, 3]
    assert sorted(train + val + rest) == list(range(60))
    assert StratifiedCarve(2, 7, seed=0).indices(targets) == (train, val, rest)
    assert StratifiedCarve(2, 7, seed=1).indices(targets) != (train, val, rest)
    with pytest.raises(ValueError, match="class 0 has 12 images, the split needs at least 13"):
        StratifiedCarve(val_per_class=6, train_per_class=7, seed=0).indices(targets)


def test_shuffled_split_sizes():
    rule = ShuffledSplit(0.3, 0.3, seed=0)
    parts = {split: rule.indices(split, 600) for split in ("train", "val", "trainval", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [180, 180, 240]
    assert sorted(parts["train"] + parts["val"]) == parts["trainval"]
    assert sorted(parts["trainval"] + parts["test"]) == list(range(600))
    assert rule.indices("val", 600) == parts["val"]


# ----------------------------------------------------------------------------------------------- folder layouts
def test_folder_entry_splits_classes_and_val_folder(tmp_path):
    make_class_folders(tmp_path / "train", {"b_cls": 12, "a_cls": 8})
    make_class_folders(tmp_path / "test", {"b_cls": 2}, PNG, ".png")
    spec = get_dataset("folder")
    loaded = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval", "test")}
    assert [len(loaded[s]) for s in ("train", "val", "trainval", "test")] == [18, 2, 20, 2]
    assert loaded["train"].classes == ["a_cls", "b_cls"]
    assert sorted(paths(loaded["train"]) + paths(loaded["val"])) == sorted(paths(loaded["trainval"]))
    assert paths(spec.load(tmp_path, "val")) == paths(loaded["val"])
    image, label = loaded["test"][0]
    assert image.mode == "RGB" and image.size == (6, 6) and label == 1 and image.getpixel((2, 2))[2] > 150
    assert spec.load(tmp_path, "test", transform=lambda im: im.size)[1] == ((6, 6), 1)

    make_class_folders(tmp_path / "val", {"a_cls": 1, "b_cls": 3})
    with_val = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval")}
    assert [len(with_val[s]) for s in ("train", "val", "trainval")] == [20, 4, 24]

    make_class_folders(tmp_path / "test", {"c_cls": 1})
    with pytest.raises(DatasetNotFoundError, match=r"class folders absent from the training split: c_cls"):
        spec.load(tmp_path, "test")


def test_empty_class_folder_is_named(tmp_path):
    make_class_folders(tmp_path / "train", {"cat": 3})
    make_class_folders(tmp_path / "test", {"cat": 1})
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetNotFoundError, match=r"class folder .*train/dog holds no images"):
        get_dataset("folder").load(tmp_path, "train")


def test_unreadable_image_is_named_and_skip_corrupt_skips_it(tmp_path):
    make_class_folders(tmp_path / "train", {"cat": 10, "dog": 10})
    make_class_folders(tmp_path / "test", {"cat": 2, "dog": 2})
    bad = tmp_path / "test" / "dog" / "0001.jpg"
    bad.write_bytes(JPEG[: len(JPEG) // 3])  # truncated
    (tmp_path / "test" / "cat" / "0000.jpg").write_bytes(b"not an image at all")
    dataset = get_dataset("folder").load(tmp_path, "test")
    with pytest.raises(CorruptImageError, match=r"cannot read image .*test/dog/0001\.jpg.*skip_corrupt=True"):
        dataset[3]
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\)") as record:
        kept = get_dataset("folder").load(tmp_path, "test", skip_corrupt=True)
    assert str(bad) in str(record[0].message)
    assert len(kept) == 2 and {path for path, _ in kept.skipped} == {bad, tmp_path / "test" / "cat" / "0000.jpg"}
    assert [label for _, label in (kept[0], kept[1])] == [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(get_dataset("folder").load(tmp_path, "train", skip_corrupt=True)) == 18


def test_mit67_layout_sizes_and_class_count(tmp_path):
    classes = {f"scene{i:02d}": 80 for i in range(67)}
    make_class_folders(tmp_path / "train", classes)
    make_class_folders(tmp_path / "test", {name: 1 for name in classes})
    spec = get_dataset("mit67")
    sizes = {split: len(spec.load(tmp_path, split)) for split in ("train", "val", "trainval", "test")}
    assert sizes == {"train": 4690, "val": 670, "trainval": 5360, "test": 67}
    val, pool = paths(spec.load(tmp_path, "val")), paths(spec.load(tmp_path, "trainval"))
    expected = random_split(range(5360), [4690, 670], generator=torch.Generator().manual_seed(51))[1]
    assert val == [pool[i] for i in sorted(expected.indices)]
    (tmp_path / "train" / "scene66" / "0079.jpg").unlink()
    with pytest.raises(DatasetNotFoundError, match="has 5359 images, expected 5360"):
        spec.load(tmp_path, "train")
    make_class_folders(tmp_path / "train", {"extra": 1})
    with pytest.raises(DatasetNotFoundError, match="has 68 class folders, expected 67"):
        spec.load(tmp_path, "train")


def test_cub200_stratified_val(tmp_path):
    make_class_folders(tmp_path / "train", {f"{i:03d}.bird": 7 for i in range(200)})
    make_class_folders(tmp_path / "test", {f"{i:03d}.bird": 1 for i in range(200)})
    spec = get_dataset("cub200")
    train, val, trainval = (spec.load(tmp_path, split) for split in ("train", "val", "trainval"))
    assert (len(train), len(val), len(trainval)) == (400, 1000, 1400)
    assert np.bincount(val.targets, minlength=200).tolist() == [5] * 200
    assert not set(paths(train)) & set(paths(val)) and sorted(paths(train) + paths(val)) == sorted(paths(trainval))


def test_sun397_partition_files(tmp_path):
    base = tmp_path / "SUN397"
    make_class_folders(base / "a", {"abbey": 12})
    make_class_folders(base / "b" / "bakery", {"shop": 12})
    (base / "ClassName.txt").write_text("/a/abbey\n/b/bakery/shop\n")
    (base / "Training_01.txt").write_text("".join(f"/{c}/{i:04d}.jpg\n" for c in ("a/abbey", "b/bakery/shop")
                                                  for i in range(11)))  # fmt: skip
    (base / "Testing_01.txt").write_text("/a/abbey/0011.jpg\n/b/bakery/shop/0011.jpg\n")
    spec = get_dataset("sun397")
    splits = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "trainval", "test")] == [2, 20, 22, 2]
    assert splits["test"].classes == ["a/abbey", "b/bakery/shop"] and splits["test"].targets == [0, 1]
    assert spec.check_root(tmp_path) == {"trainval": 22, "test": 2}


# ----------------------------------------------------------------------------------------------- torchvision layouts
def test_dtd_official_splits_and_trainval_concat(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    make_class_folders(base / "images", {"banded": 4, "woven": 4})
    (base / "labels").mkdir()
    for split, ids in (("train", (0, 1)), ("val", (2,)), ("test", (3,))):
        (base / "labels" / f"{split}1.txt").write_text("".join(f"{c}/{i:04d}.jpg\n" for c in ("banded", "woven")
                                                               for i in ids))  # fmt: skip
    spec = get_dataset("dtd")
    splits = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "trainval", "test")] == [4, 2, 6, 2]
    assert splits["trainval"].classes == ["banded", "woven"]
    assert [label for _, label in (splits["trainval"][i] for i in range(6))] == [0, 0, 1, 1, 0, 1]
    assert spec.check_root(tmp_path) == {"train": 4, "val": 2, "test": 2}


def test_caltech101_stratified_split_and_rgb(tmp_path):
    base = tmp_path / "caltech101" / "101_ObjectCategories"
    for name in ("BACKGROUND_Google", "ant", "bee"):
        (base / name).mkdir(parents=True)
        for i in range(1, 34):
            Image.new("L", (5, 4), 80).save(base / name / f"image_{i:04d}.jpg")
    spec = get_dataset("caltech101")
    splits = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "trainval", "test")] == [50, 10, 60, 6]
    assert splits["test"].classes == ["ant", "bee"]
    assert sorted(splits["train"].indices + splits["val"].indices + splits["test"].indices) == list(range(66))
    image, label = splits["val"][9]
    assert image.mode == "RGB" and image.size == (5, 4) and label == 1


def test_food101_partial_copy_is_reported(tmp_path):
    meta = tmp_path / "food-101" / "meta"
    meta.mkdir(parents=True)
    make_class_folders(tmp_path / "food-101" / "images", {"apple_pie": 3})
    for split in ("train", "test"):
        (meta / f"{split}.json").write_text('{"apple_pie": ["apple_pie/0000", "apple_pie/0001"]}')
    assert len(get_dataset("food101").load(tmp_path, "test")) == 2
    with pytest.raises(DatasetNotFoundError, match="official training split has 2 images, expected 75750"):
        get_dataset("food101").load(tmp_path, "train")


# ----------------------------------------------------------------------------------------------- 300W, VOC
def test_300w_square_crop_and_normalised_landmarks(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("01_Indoor", "02_Outdoor"):
        (tmp_path / folder).mkdir()
        for i in range(5):
            Image.new("RGB", (80, 60), (90, 90, 90)).save(tmp_path / folder / f"face_{i}.png")
            points = np.column_stack([rng.uniform(20, 50, 68), rng.uniform(10, 40, 68)])
            body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
            (tmp_path / folder / f"face_{i}.pts").write_text(f"version: 1\nn_points:  68\n{{\n{body}\n}}\n")
    spec = get_dataset("300w")
    splits = {split: spec.load(tmp_path, split) for split in ("train", "val", "trainval", "test")}
    assert [len(splits[s]) for s in ("train", "val", "trainval", "test")] == [3, 3, 6, 4]
    crop, target = splits["test"][0]
    path, points = splits["test"].samples[0]
    points = points.numpy()
    side = round((points.max(0) - points.min(0)).max())
    left, top = (round(c - side / 2) for c in (points.min(0) + points.max(0)) / 2)
    expected = ((points - [left, top]) / side).reshape(-1)
    expected /= np.linalg.norm(expected)
    assert crop.size == (side, side) and target.dtype == torch.float32 and target.shape == (136,)
    np.testing.assert_allclose(target.numpy(), expected, atol=1e-6)
    (tmp_path / "02_Outdoor" / "face_4.pts").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lack a landmarks file, e.g. .*face_4\.pts"):
        spec.load(tmp_path, "train")


def test_voc_target_follows_torchvision_detection_format():
    annotation = {"annotation": {"object": [
        {"name": "dog", "difficult": "0", "bndbox": {"xmin": "11", "ymin": "21", "xmax": "50", "ymax": "60"}},
        {"name": "person", "difficult": "1", "bndbox": {"xmin": "1", "ymin": "1", "xmax": "5", "ymax": "9"}},
    ]}}  # fmt: skip
    target = voc_target(annotation)
    assert torch.equal(target["boxes"], torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 5.0, 9.0]]))
    assert target["labels"].tolist() == [12, 15] and target["labels"].dtype == torch.int64
    assert target["difficult"].tolist() == [False, True]
    assert voc_target({"annotation": {}})["boxes"].shape == (0, 4)


def test_voc2007_loads_07_plus_12_trainval(tmp_path):
    xml = ("<annotation><object><name>cat</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin>"
           "<xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>")  # fmt: skip
    for year, lists in (("2007", {"trainval": ["a", "b"], "test": ["c"]}), ("2012", {"trainval": ["d"]})):
        base = tmp_path / "VOCdevkit" / f"VOC{year}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (base / sub).mkdir(parents=True)
        for image_set, ids in lists.items():
            (base / "ImageSets" / "Main" / f"{image_set}.txt").write_text("\n".join(ids) + "\n")
            for image_id in ids:
                (base / "JPEGImages" / f"{image_id}.jpg").write_bytes(JPEG)
                (base / "Annotations" / f"{image_id}.xml").write_text(xml)
    spec = get_dataset("voc2007")
    train, test = spec.load(tmp_path, "train"), spec.load(tmp_path, "test")
    assert (len(train), len(test)) == (3, 1) and spec.check_root(tmp_path) == {"train": 3, "test": 1}
    image, target = train[2]
    assert image.size == (6, 6) and target["labels"].tolist() == [8] and target["boxes"].tolist() == [[1, 2, 5, 6]]


# ----------------------------------------------------------------------------------------------- synthetic
def radial_profile(images: torch.Tensor) -> np.ndarray:
    """Colour-invariant shape features: histogram of object-pixel distances to the object centroid,
    in units of sqrt(object area)."""
    x = images.float() / 255
    masks = ((x.amax(1) - x.amin(1)) > 0.3).float()  # the objects are saturated, the background is grey
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in x.shape[-2:]), indexing="ij")
    area = masks.sum((1, 2)).clamp(min=1)
    cy, cx = ((masks * ys).sum((1, 2)) / area), ((masks * xs).sum((1, 2)) / area)
    radius = ((ys - cy[:, None, None]) ** 2 + (xs - cx[:, None, None]) ** 2).sqrt() / area.sqrt()[:, None, None]
    bins = (radius / 0.1).long().clamp(max=11).flatten(1)
    return (torch.zeros(len(x), 12).scatter_add_(1, bins, masks.flatten(1)) / area[:, None]).numpy()


def test_synthetic_labels_need_colour_and_shape():
    train, test = SyntheticShapes("train"), SyntheticShapes("test")
    images = {"train": train.render(range(len(train))), "test": test.render(range(len(test)))}
    colour = {split: (batch.float() / 255).mean((2, 3)).numpy() for split, batch in images.items()}  # mean RGB
    shape = {split: radial_profile(batch) for split, batch in images.items()}
    both = {split: np.hstack([colour[split], shape[split]]) for split in images}

    def accuracy(features: dict[str, np.ndarray], target: str) -> float:
        labels = {split: np.array(SyntheticShapes(split, target=target).targets) for split in ("train", "test")}
        model = LogisticRegression(max_iter=3000).fit(features["train"], labels["train"])
        return model.score(features["test"], labels["test"])

    assert accuracy(colour, "color") > 0.85 and accuracy(colour, "joint") < 0.3 and accuracy(colour, "shape") < 0.35
    assert accuracy(shape, "shape") > 0.85 and accuracy(shape, "joint") < 0.3 and accuracy(shape, "color") < 0.35
    assert accuracy(both, "joint") > 0.75


def test_synthetic_is_deterministic_balanced_and_in_range():
    train = SyntheticShapes("train")
    images = train.render(range(64))
    assert images.dtype == torch.uint8 and images.shape == (64, 3, 32, 32)
    assert images.min() < 40 and images.max() > 200 and images.float().std() > 30
    assert torch.equal(SyntheticShapes("train").render(range(64)), images)
    assert torch.equal(train[17][0], images[17]) and torch.equal(train.render([40, 17])[1], images[17])
    assert not torch.equal(SyntheticShapes("train", seed=1).render(range(64)), images)
    assert not torch.equal(SyntheticShapes("test").render(range(64)), images)
    for target, classes in (("joint", 16), ("shape", 4), ("color", 4)):
        for split, n in (("train", 2048), ("val", 512), ("test", 1024)):
            counts = np.bincount(SyntheticShapes(split, target=target).targets, minlength=classes)
            assert counts.tolist() == [n // classes] * classes
    joint = SyntheticShapes("val").targets
    shape, color = SyntheticShapes("val", target="shape").targets, SyntheticShapes("val", target="color").targets
    assert joint == [s * 4 + c for s, c in zip(shape, color)]


def test_synthetic_splits_and_registry_loading():
    lengths = {"train": 10, "val": 6}
    val, trainval = SyntheticShapes("val", lengths=lengths), SyntheticShapes("trainval", lengths=lengths)
    assert len(trainval) == 16 and torch.equal(trainval.render([12])[0], val.render([2])[0])
    assert torch.equal(trainval.render([3]), SyntheticShapes("train", lengths={"train": 10}).render([3]))
    spec = get_dataset("synthetic")
    assert [len(spec.load(None, s)) for s in ("train", "val", "trainval", "test")] == [2048, 512, 2560, 1024]
    image, label = spec.load(None, "train")[5]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and label == 5
    assert np.array_equal(np.asarray(image), SyntheticShapes("train")[5][0].permute(1, 2, 0).numpy())
    assert spec.load("/ignored", "test", size=48)[0][0].size == (48, 48)
    assert get_dataset("synthetic_color").load(None, "train")[5][1] == 1
    with pytest.raises(ValueError, match=r"target 'texture' is unknown; choose one of joint, shape, color"):
        SyntheticShapes("train", target="texture")
    with pytest.raises(ValueError, match=r"split 'all' is unknown"):
        SyntheticShapes("all")


# ----------------------------------------------------------------------------------------------- pretraining
def test_load_pretrain_and_collate_images():
    dataset = load_pretrain("synthetic", None, size=40)
    loader = DataLoader(dataset, batch_size=8, collate_fn=collate_images)
    images, labels = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 40, 40) and labels.tolist() == list(range(8))
    assert torch.equal(images[3], SyntheticShapes("train", size=40)[3][0])
    mixed = [(torch.zeros(3, 4, 6, dtype=torch.uint8), 1), (torch.zeros(3, 5, 5, dtype=torch.uint8), 2)]
    images, labels = collate_images(mixed)
    assert isinstance(images, list) and [im.shape[1:] for im in images] == [(4, 6), (5, 5)]
    assert labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match=r"'pets' is not for pretraining; choose one of .*imagenet100"):
        load_pretrain("pets", None)


def test_load_pretrain_resizes_shorter_side(tmp_path):
    train = tmp_path / "train" / "thing"
    train.mkdir(parents=True)
    Image.new("RGB", (30, 20), (10, 200, 10)).save(train / "wide.png")
    Image.new("RGB", (20, 20), (10, 200, 10)).save(train / "square.png")
    make_class_folders(tmp_path / "test", {"thing": 1})
    dataset = load_pretrain("folder", tmp_path, size=10)
    shapes = sorted(tuple(dataset[i][0].shape) for i in range(len(dataset)))
    assert shapes == [(3, 10, 10), (3, 10, 15)] and dataset[0][0].dtype == torch.uint8


# ----------------------------------------------------------------------------------------------- real CIFAR-10
@pytest.mark.cifar
def test_cifar10_jpeg_folders(cifar10_jpeg_root):
    spec = get_dataset("cifar10")
    splits = {split: spec.load(cifar10_jpeg_root, split) for split in ("train", "val", "trainval", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 45000, "val": 5000, "trainval": 50000, "test": 10000}
    assert splits["train"].classes == CIFAR10_ORDER == splits["test"].classes
    pool = paths(splits["trainval"])
    reference = random_split(range(50000), [45000, 5000], generator=torch.Generator().manual_seed(43))
    assert paths(splits["val"]) == [pool[i] for i in sorted(reference[1].indices)]
    assert not set(paths(splits["train"])) & set(paths(splits["val"]))
    assert [pool[i].parent.name for i in (0, 5000, 49999)] == ["airplane", "automobile", "truck"]

    rng = np.random.default_rng(0)
    to_tensor = load_pretrain("cifar10", cifar10_jpeg_root).transform
    sample = [splits["trainval"][int(i)] for i in rng.choice(50000, 600, replace=False)]
    pixels = torch.stack([to_tensor(image) for image, _ in sample])
    assert pixels.shape == (600, 3, 32, 32) and pixels.dtype == torch.uint8
    means = (pixels.float() / 255).mean((0, 2, 3))
    torch.testing.assert_close(means, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.02, rtol=0)
    assert all(CIFAR10_ORDER[label] == path.parent.name for path, label in splits["trainval"].samples[::997])
    image, label = splits["test"][9999]
    assert label == 9 and image.size == (32, 32)


@pytest.mark.cifar
def test_check_roots_finds_symlinked_cifar10(cifar10_jpeg_root, tmp_path):
    (tmp_path / "cifar10").symlink_to(cifar10_jpeg_root, target_is_directory=True)
    (tmp_path / "mit67").mkdir()
    results = {result.name: result for result in check_roots(tmp_path)}
    assert set(results) == {name for name, spec in DATASETS.items() if spec.checked}
    assert results["cifar10"].status == "present" and results["cifar10"].counts == {"train": 50000, "test": 10000}
    assert results["mit67"].status == "invalid" and "missing folder" in results["mit67"].message
    missing = {name for name, result in results.items() if result.status == "missing"}
    assert missing == set(results) - {"cifar10", "mit67"}
    table = format_check_table(list(results.values()))
    assert "cifar10" in table and "train 50000, test 10000" in table and "1 of 17 datasets present" in table
