"""Every registered dataset: layout, splits (sizes, seeds), metric and classes.

Val carve-outs reproduce the authors' `random_split` sizes and seeds; where they used index files we do not
have (caltech101, sun397, cub200), our own seeded stratified carves have their sizes (see docs/datasets.md).
torchvision's dataset classes are named, not imported: the workflow plan reads the catalog without torch.
"""

from __future__ import annotations

from importlib import resources

from cassle.data.cifar import CIFAR10_CLASSES, CifarSource
from cassle.data.detection import VocSource
from cassle.data.folder_sets import FolderSource
from cassle.data.landmarks import Faces300WSource
from cassle.data.spec import DatasetSpec
from cassle.data.splits import RandomCarve, ShuffledSplit, StratifiedCarve
from cassle.data.sun397 import Sun397Source
from cassle.data.synthetic_source import DEFAULT_LENGTHS, SyntheticSource
from cassle.data.torchvision_sets import TorchvisionSource

PRETRAIN = frozenset({"pretrain", "downstream"})
# Seed of our own carves, where the authors used index files we do not have.
OWN_SEED = 0


def imagenet100_classes() -> tuple[str, ...]:
    """The 100 ImageNet wnids of CMC's ImageNet-100 list; label i is the i-th wnid of the list."""
    return tuple(resources.files("cassle.data").joinpath("resources/imagenet100.txt").read_text().split())


def _sizes(train: int, val: int, test: int, trainval: int | None = None) -> dict[str, int]:
    return {"train": train, "val": val, "trainval": trainval or train + val, "test": test}


class _Carved:
    """A val carved out of an official pool (RandomCarve), with the split sizes and notes it implies."""

    def __init__(self, val: int, seed: int, pool: int, test: int, pool_name: str = "train") -> None:
        self.carve = RandomCarve(val, seed, pool=pool)
        self.sizes = _sizes(pool - val, val, test, pool)
        self.notes = (f"val: {val} images of the official {pool}-image {pool_name} set (randperm, seed {seed}), "
                      f"train: the rest; test: the official test set")  # fmt: skip


def _folder_layout(classes: str, ext: str = "*.jpg") -> str:
    return f"<root>/train/<class>/{ext}  and  <root>/test/<class>/{ext}   ({classes})"


def _train_test(pool: str = "train") -> dict[str, dict[str, str]]:
    """torchvision `split=` arguments of the official pool and test set."""
    return {"pool": {"split": pool}, "test": {"split": "test"}}


def _cifar(name: str, label: str, title: str, num_classes: int, seed: int) -> DatasetSpec:
    pickled_dir = "cifar-10-batches-py" if num_classes == 10 else "cifar-100-python"
    carved = _Carved(5000, seed, pool=50000, test=10000)
    class_name = "CIFAR10" if num_classes == 10 else "CIFAR100"
    pickled = TorchvisionSource(class_name, (pickled_dir,), {"pool": {"train": True}, "test": {"train": False}},
                                carved.carve)  # fmt: skip
    fixed = CIFAR10_CLASSES if num_classes == 10 else None
    order = "canonical CIFAR-10 order: " + ", ".join(CIFAR10_CLASSES) if fixed else "100 fine-label folders, sorted"
    return DatasetSpec(
        name=name, label=label, title=title, num_classes=num_classes, kinds=PRETRAIN, pretrain_split="trainval",
        image_size=32,
        layout=f"either torchvision's pickled batches: <root>/{pickled_dir}/ (as extracted from the official "
               f"tarball)\nor JPEG class folders: {_folder_layout(order)}",
        sizes=carved.sizes, split_notes=carved.notes + "; pretraining uses trainval (all 50000)",
        source=CifarSource(pickled_dir, pickled, FolderSource(carved.carve, classes=fixed, num_classes=num_classes)),
    )  # fmt: skip


def _imagenet100() -> DatasetSpec:
    return DatasetSpec(
        name="imagenet100", label="IN-100", title="ImageNet-100", num_classes=100, kinds=PRETRAIN,
        pretrain_split="trainval",
        layout="<root>/train/<wnid>/*.JPEG  and  <root>/val/<wnid>/*.JPEG   (a full ImageNet tree is fine: only "
               "the 100 wnids of CMC's list, cassle/data/resources/imagenet100.txt, are read, labelled in list "
               "order; the val images must be sorted into wnid folders, e.g. with valprep.sh)",
        sizes=_sizes(114020, 12669, 5000, 126689),
        split_notes="val: 10% of the official train set (randperm, seed 42, rounded), train: the rest; test: the "
                    "official val set; pretraining uses trainval (the whole official train set)",
        source=FolderSource(RandomCarve(0.1, 42), classes=imagenet100_classes(), test_dir="val"),
    )  # fmt: skip


def _imagenet1k() -> DatasetSpec:
    return DatasetSpec(
        name="imagenet1k", title="ImageNet-1k", num_classes=1000, kinds=PRETRAIN, pretrain_split="trainval",
        layout="<root>/train/<wnid>/*.JPEG  and  <root>/val/<wnid>/*.JPEG   (the 1000 wnid folders, labelled in "
               "sorted order; the val images must be sorted into wnid folders, e.g. with valprep.sh)",
        sizes=_sizes(1153050, 128117, 50000, 1281167),
        split_notes="val: 10% of the official train set (randperm, seed 42, rounded), train: the rest; test: the "
                    "official val set; pretraining uses trainval (the whole official train set)",
        source=FolderSource(RandomCarve(0.1, 42), test_dir="val"),
    )  # fmt: skip


def _stl10() -> DatasetSpec:
    carved = _Carved(500, 50, pool=5000, test=8000)
    files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt")
    official = {**_train_test(), "unlabeled": {"split": "unlabeled"}, "train+unlabeled": {"split": "train+unlabeled"}}
    return DatasetSpec(
        name="stl10", label="STL10", title="STL-10", num_classes=10, kinds=PRETRAIN, pretrain_split="train+unlabeled",
        image_size=96,
        layout="<root>/stl10_binary/{" + ", ".join(files) + "}",
        splits=("train", "val", "trainval", "test", "unlabeled", "train+unlabeled"),
        sizes={**carved.sizes, "unlabeled": 100000, "train+unlabeled": 105000},
        split_notes=carved.notes + "; pretraining uses train+unlabeled (the unlabeled images have label -1)",
        source=TorchvisionSource("STL10", tuple(f"stl10_binary/{f}" for f in files), official, carved.carve),
    )  # fmt: skip


def _torchvision_downstream() -> list[DatasetSpec]:
    food, pets, cars = (_Carved(7575, 42, pool=75750, test=25250), _Carved(740, 49, 3680, 3669, "trainval"),
                        _Carved(1144, 51, pool=8144, test=8041))  # fmt: skip
    pets_lists = {split: f"oxford-iiit-pet/annotations/{split}.txt" for split in ("trainval", "test")}
    cars_files = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train", "cars_test",
                  "cars_test_annos_withlabels.mat")  # fmt: skip
    aircraft_data = "fgvc-aircraft-2013b/data"
    aircraft_lists = {s: f"{aircraft_data}/images_variant_{s}.txt" for s in ("train", "val", "trainval", "test")}
    dtd_lists = {split: f"dtd/dtd/labels/{split}1.txt" for split in ("train", "val", "test")}
    official_three = {split: {"split": split} for split in ("train", "val", "test")}
    return [
        DatasetSpec(
            name="food101", label="Food", title="Food-101", num_classes=101, sizes=food.sizes, split_notes=food.notes,
            layout="<root>/food-101/{images/<class>/*.jpg, meta/{train,test}.json, meta/{train,test}.txt}",
            source=TorchvisionSource("Food101", ("food-101/images", "food-101/meta"), _train_test(), food.carve,
                                     counted={"trainval": "food-101/meta/train.txt", "test": "food-101/meta/test.txt"}),
        ),
        DatasetSpec(
            name="pets", label="Pets", title="Oxford-IIIT Pets", num_classes=37, metric="class_avg", sizes=pets.sizes,
            split_notes=pets.notes, layout="<root>/oxford-iiit-pet/{images/*.jpg, annotations/{trainval,test}.txt}",
            source=TorchvisionSource("OxfordIIITPet", ("oxford-iiit-pet/images", *pets_lists.values()),
                                     _train_test("trainval"), pets.carve, counted=pets_lists),
        ),
        DatasetSpec(
            name="flowers", label="Flowers", title="Oxford Flowers-102", num_classes=102, metric="class_avg",
            sizes=_sizes(1020, 1020, 6149), split_notes="official train/val/test; trainval = train + val",
            layout="<root>/flowers-102/{jpg/image_*.jpg, imagelabels.mat, setid.mat}",
            source=TorchvisionSource("Flowers102", ("flowers-102/jpg", "flowers-102/imagelabels.mat",
                                                    "flowers-102/setid.mat"), official_three),
        ),
        DatasetSpec(
            name="caltech101", label="Caltech", title="Caltech-101", num_classes=101, metric="class_avg",
            sizes=_sizes(2525, 505, 5647),
            split_notes=f"no official split: per class 25 train + 5 val images (stratified, seed {OWN_SEED}), the "
                        "rest is test; the sizes of the authors' splits/caltech101.pth, other images",
            layout="<root>/caltech101/101_ObjectCategories/<class>/image_*.jpg   (BACKGROUND_Google is ignored)",
            source=TorchvisionSource("Caltech101", ("caltech101/101_ObjectCategories",), {"pool": {}},
                                     StratifiedCarve(val_per_class=5, train_per_class=25, seed=OWN_SEED),
                                     classes_attr="categories", targets_attr="y"),
        ),
        DatasetSpec(
            name="cars", label="Cars", title="Stanford Cars", num_classes=196, sizes=cars.sizes, split_notes=cars.notes,
            layout="<root>/stanford_cars/{devkit/{cars_meta.mat, cars_train_annos.mat}, cars_train/*.jpg, "
                   "cars_test/*.jpg, cars_test_annos_withlabels.mat}",
            source=TorchvisionSource("StanfordCars", tuple(f"stanford_cars/{f}" for f in cars_files),
                                     _train_test(), cars.carve),
        ),
        DatasetSpec(
            name="aircraft", label="FGVCA", title="FGVC-Aircraft", num_classes=100, metric="class_avg",
            sizes=_sizes(3334, 3333, 3333, 6667), split_notes="official train/val/trainval/test (variant level)",
            layout="<root>/fgvc-aircraft-2013b/data/{images/*.jpg, variants.txt, "
                   "images_variant_{train,val,trainval,test}.txt}",
            source=TorchvisionSource("FGVCAircraft", (f"{aircraft_data}/images", f"{aircraft_data}/variants.txt",
                                                      *aircraft_lists.values()),
                                     {s: {"split": s, "annotation_level": "variant"} for s in aircraft_lists},
                                     counted=aircraft_lists),
        ),
        DatasetSpec(
            name="dtd", label="DTD", title="Describable Textures", num_classes=47, sizes=_sizes(1880, 1880, 1880),
            split_notes="official partition 1 train/val/test; trainval = train + val",
            layout="<root>/dtd/dtd/{images/<class>/*.jpg, labels/{train,val,test}1.txt}   (torchvision's layout: "
                   "the official tarball's dtd/ folder inside <root>/dtd/)",
            source=TorchvisionSource("DTD", ("dtd/dtd/images", *dtd_lists.values()),
                                     {s: {"split": s, "partition": 1} for s in dtd_lists}, counted=dtd_lists),
        ),
    ]  # fmt: skip


def _other_downstream() -> list[DatasetSpec]:
    mit = _Carved(670, 51, pool=5360, test=1340)
    return [
        DatasetSpec(
            name="mit67", label="MIT", title="MIT Indoor-67", num_classes=67, sizes=mit.sizes, split_notes=mit.notes,
            layout=_folder_layout("67 scene classes; the official TrainImages/TestImages lists sorted into class "
                                  "folders"),
            source=FolderSource(mit.carve, num_classes=67),
        ),
        DatasetSpec(
            name="sun397", label="SUN", title="SUN397", num_classes=397, sizes=_sizes(15880, 3970, 19850),
            split_notes=f"partition 1: test = Testing_01; val = 10 images per class of Training_01 (stratified, "
                        f"seed {OWN_SEED}), train = the other 40; the sizes of the authors' splits/sun397.pth, other "
                        "images",
            layout="<root>/SUN397/{ClassName.txt, Training_01.txt, Testing_01.txt, <letter>/<class>/*.jpg}   (the "
                   "images tarball plus the official Partitions files)",
            source=Sun397Source(StratifiedCarve(val_per_class=10, train_per_class=None, seed=OWN_SEED)),
        ),
        DatasetSpec(
            name="cub200", label="CUB", title="Caltech-UCSD Birds-200-2011", num_classes=200,
            sizes=_sizes(4994, 1000, 5794, 5994),
            split_notes=f"test: the official test set; val = 5 images per class of the official train set "
                        f"(stratified, seed {OWN_SEED}), train = the other 4994 (the authors' splits/cub200.pth has "
                        "4990/1000)",
            layout=_folder_layout("200 species; CUB_200_2011 images sorted into class folders by "
                                  "train_test_split.txt"),
            source=FolderSource(StratifiedCarve(val_per_class=5, train_per_class=None, seed=OWN_SEED),
                                num_classes=200),
        ),
        DatasetSpec(
            name="300w", label="300W", title="300 Faces In-the-Wild", num_classes=136, metric="r2",
            sizes=_sizes(180, 180, 240),
            split_notes="no official split: one permutation (randperm, seed 0) of the 600 images, 30% train, 30% "
                        "val, 40% test; targets: the 136 landmark coordinates in the square landmark box, "
                        "L2-normalised",
            layout="<root>/01_Indoor/*.png + *.pts  and  <root>/02_Outdoor/*.png + *.pts   (68 landmarks each)",
            source=Faces300WSource(ShuffledSplit(0.3, 0.3, seed=0)),
        ),
        DatasetSpec(
            name="voc2007", label="VOC07", title="PASCAL VOC 2007 (+2012 trainval)", num_classes=20,
            kinds=frozenset({"detection"}),
            metric="ap", splits=("train", "test"), sizes={"train": 16551, "test": 4952},
            split_notes="VOC07 protocol: train = VOC2007 trainval + VOC2012 trainval, test = VOC2007 test; no val",
            layout="<root>/VOCdevkit/VOC2007/{Annotations, JPEGImages, ImageSets/Main/{trainval,test}.txt}  and  "
                   "<root>/VOCdevkit/VOC2012/{Annotations, JPEGImages, ImageSets/Main/trainval.txt}",
            source=VocSource(),
        ),
    ]  # fmt: skip


def _user_and_synthetic() -> list[DatasetSpec]:
    entries = [DatasetSpec(
        name="folder", title="Image folders (your own data)", num_classes=None, kinds=PRETRAIN,
        pretrain_split="trainval", checked=False, sizes={},
        split_notes="val: the val/ folder if present, else 10% of train/ (randperm, seed 0); test: the test/ "
                    "folder; pretraining uses trainval",
        layout=_folder_layout("any classes: the sub-folders of train/, sorted", ext="*")
               + "\n  and optionally <root>/val/<class>/*",
        source=FolderSource(RandomCarve(0.1, 0), val_dir="val"),
    )]  # fmt: skip
    lengths = DEFAULT_LENGTHS
    for suffix, target, classes in (("", "joint", 16), ("_shape", "shape", 4), ("_color", "color", 4)):
        pretrain = target == "joint"
        entries.append(DatasetSpec(
            name="synthetic" + suffix, title=f"Synthetic shapes ({target} label)", num_classes=classes,
            kinds=PRETRAIN if pretrain else frozenset({"downstream"}), pretrain_split="train" if pretrain else None,
            needs_root=False, checked=False, sizes=_sizes(lengths["train"], lengths["val"], lengths["test"]),
            image_size=32,
            split_notes="fixed procedural splits (sizes configurable with the `lengths` option); "
                        + ("pretraining uses train" if pretrain else "the images of `synthetic`, other labels"),
            layout="no files: images are rendered from their index (the root is ignored and may be omitted)",
            source=SyntheticSource(target),
        ))  # fmt: skip
    return entries


CATALOG: tuple[DatasetSpec, ...] = (
    _cifar("cifar10", "C10", "CIFAR-10", 10, seed=43),
    _cifar("cifar100", "C100", "CIFAR-100", 100, seed=44),
    _imagenet100(),
    _imagenet1k(),
    _stl10(),
    *_torchvision_downstream(),
    *_other_downstream(),
    *_user_and_synthetic(),
)
