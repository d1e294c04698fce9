"""Segmentation labels as TorchGeo datasets: class-id rasters and vector layers.

Both return ``{"mask": int64 H×W, "crs", "bounds"}`` with :data:`IGNORE_INDEX` where
nothing is labelled, so sparse labels (a few polygons, a mask with nodata) train
through ``CrossEntropyLoss(ignore_index=IGNORE_INDEX)``. Combine with imagery by
intersection: ``mosaic & labels``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio.features
import shapely
import torch
from affine import Affine
from geopandas import GeoDataFrame
from rasterio.crs import CRS
from rasterio.enums import Resampling
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice

from ..errors import GeossclError
from .grid import MapGrid
from .mosaic import Mosaic

#: Label value of pixels without a label (nodata, outside every polygon).
IGNORE_INDEX = -1


class RasterLabels(Mosaic):
    """Class-id rasters (one band) read as masks, in any CRS, aligned to the imagery.

    Read with nearest-neighbour resampling, so class ids are never blended. Pixels
    equal to the files' nodata or to ``ignore_value`` become :data:`IGNORE_INDEX`.

    Args:
        paths: files, directories or globs of class-id rasters.
        ignore_value: a class id that means "unlabelled", besides the nodata value.
        crs: CRS to read in (default: the first file's; set by ``imagery & labels``).
        res: resolution (default: the first file's).
    """

    is_image = False

    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        ignore_value: float | None = None,
        crs: Any = None,
        res: float | tuple[float, float] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(paths, bands=[1], crs=crs, res=res, transforms=transforms, resampling=Resampling.nearest)
        self.ignore_value = ignore_value

    def _sample(self, query: GeoSlice) -> dict[str, Any]:
        """``{"mask": int64 H×W (IGNORE_INDEX = unlabelled), "crs", "bounds"}``."""
        sample = super()._sample(query)
        values = sample.pop("image")[0]
        unlabelled = torch.isnan(values)
        if self.ignore_value is not None:
            unlabelled |= values == self.ignore_value
        sample["mask"] = values.nan_to_num(0).to(torch.int64).masked_fill(unlabelled, IGNORE_INDEX)
        return sample


class VectorLabels(MapGrid, GeoDataset):
    """Polygons of a vector layer (GeoPackage, GeoJSON, Shapefile, …) rasterised on the fly.

    The layer is read once, reprojected to the dataset CRS and kept with a spatial
    index; each query burns the polygons it touches into a mask on the query's grid
    (a pixel is labelled when its centre is inside a polygon). TorchGeo's
    ``VectorDataset`` re-reads the file at every query and fills unlabelled pixels
    with 0, which makes sparse labels look like class 0; hence this class.

    Args:
        path: the vector file.
        class_column: column holding each polygon's class, ids (integers) or names.
        classes: class names in id order; names in ``class_column`` are mapped to
            their position here (default for a name column: the sorted distinct
            names).
        layer: layer name or index of a multi-layer file.
        crs: CRS to rasterise in (default: the layer's; set by ``imagery & labels``).
        res: resolution of the masks in units of ``crs``.

    Raises:
        GeossclError: if the file cannot be read, has no polygon, lacks the column,
            or holds a class name missing from ``classes``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        class_column: str,
        classes: Sequence[str] | None = None,
        layer: str | int | None = None,
        crs: Any = None,
        res: float | tuple[float, float] = 1.0,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        path = os.fspath(path)
        try:
            frame = gpd.read_file(path, layer=layer)
        except Exception as exc:  # noqa: BLE001 - pyogrio and fiona raise many kinds
            raise GeossclError(f"{path}: not a readable vector layer ({str(exc).splitlines()[0]})") from None
        if frame.crs is None:
            raise GeossclError(f"{path}: vector layer has no CRS")
        if class_column not in frame.columns:
            columns = ", ".join(c for c in frame.columns if c != frame.geometry.name)
            raise GeossclError(f"{path}: no column {class_column!r}; the layer has {columns}")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
        if frame.empty:
            raise GeossclError(f"{path}: no polygon features")
        values = frame[class_column]
        if pd.api.types.is_numeric_dtype(values):
            ids = values.astype(np.int64).to_numpy()
            self.classes = list(classes) if classes is not None else None
        else:
            names = values.astype(str)
            self.classes = list(classes) if classes is not None else sorted(names.unique())
            unknown = sorted(set(names) - set(self.classes))
            if unknown:
                raise GeossclError(f"{path}: class(es) {', '.join(unknown)} in column {class_column!r} are not in the classes list")
            ids = names.map({name: i for i, name in enumerate(self.classes)}).to_numpy(np.int64)
        if (ids < 0).any():
            raise GeossclError(f"{path}: negative class id in column {class_column!r}")
        self.paths = path
        self.transforms = transforms
        self._source = GeoDataFrame({"class_id": ids}, geometry=frame.geometry.values, crs=frame.crs)
        self._crs = CRS.from_user_input(crs) if crs is not None else CRS.from_user_input(frame.crs)
        self._res = (float(res), float(res)) if isinstance(res, int | float) else (float(res[0]), float(res[1]))
        self._reproject()

    def _reproject(self) -> None:
        shapes = self._source.to_crs(self._crs)
        self._geometries = shapes.geometry.values
        self._ids = shapes["class_id"].to_numpy()
        self._tree = shapely.STRtree(self._geometries)
        always = pd.IntervalIndex.from_tuples([(pd.Timestamp.min, pd.Timestamp.max)], closed="both", name="datetime")
        self.index = GeoDataFrame(
            {"filepath": [self.paths]}, index=always, geometry=[shapely.box(*shapes.total_bounds)], crs=self._crs
        )

    @property
    def class_ids(self) -> np.ndarray:
        """Class id of each polygon."""
        return self._ids

    def covers_any(self, region: shapely.Geometry) -> bool:
        """Whether any labelled polygon overlaps ``region`` (same CRS) with positive area."""
        hits = self._tree.query(region, predicate="intersects")
        return any(shapely.intersection(self._geometries[i], region).area > 0 for i in hits)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """``{"mask": int64 H×W (IGNORE_INDEX = unlabelled), "crs", "bounds"}`` on the query's grid."""
        x, y, _ = self._disambiguate_slice(query)
        width = max(1, round((x.stop - x.start) / x.step))
        height = max(1, round((y.stop - y.start) / y.step))
        transform = Affine(x.step, 0.0, x.start, 0.0, -y.step, y.stop)
        hits = self._tree.query(shapely.box(x.start, y.start, x.stop, y.stop))
        mask = np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        if hits.size:
            burned = rasterio.features.rasterize(
                zip(self._geometries[hits], self._ids[hits].tolist()),
                out_shape=(height, width), transform=transform, fill=-1, dtype="int32",
            )
            mask = burned.astype(np.int64)
        sample: dict[str, Any] = {"mask": torch.from_numpy(mask), "crs": self.crs, "bounds": query}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def open_labels(
    paths: Sequence[str | os.PathLike],
    class_column: str | None = None,
    classes: Sequence[str] | None = None,
    nodata: float | None = None,
) -> tuple[RasterLabels | VectorLabels, set[int]]:
    """Class rasters, or one vector layer, as a labels dataset, with the set of class ids it holds.

    Args:
        nodata: value of the class rasters meaning "unlabelled", besides the
            nodata value their files declare (many label sets, Sen1Floods11's
            among them, mark unlabelled pixels with -1 or 255 without declaring it).

    Raises:
        GeossclError: for no paths, a mix of rasters and vectors, several vector
            layers, a vector layer without ``class_column``, ``nodata`` given for a
            vector layer, or a raster holding negative values that are neither
            its nodata nor ``nodata`` (a class id is never negative).
    """
    from .files import RASTER_SUFFIXES

    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise GeossclError("labels: give at least one label file")
    rasters = [p for p in paths if p.lower().endswith(RASTER_SUFFIXES)]
    if len(rasters) == len(paths):
        labels = RasterLabels(paths, ignore_value=nodata)
        return labels, _raster_ids(labels.files, nodata)
    if rasters or len(paths) > 1:
        raise GeossclError(f"labels: give class rasters, or one vector layer ({', '.join(paths)})")
    if nodata is not None:
        raise GeossclError(f"{paths[0]}: --label-nodata is for class rasters; a vector layer's unlabelled pixels are those outside its polygons")
    if not class_column:
        raise GeossclError(f"{paths[0]}: vector labels need --class-column")
    labels = VectorLabels(paths[0], class_column, classes=classes)
    return labels, {int(i) for i in np.unique(labels.class_ids)}


def nodata_hint(value: int) -> str:
    """What to pass when a stray class id ``value`` is likely an unlabelled value the file does not declare."""
    return f"if {value} means unlabelled, pass --label-nodata {value}"


def _raster_ids(paths: Sequence[str], nodata: float | None = None) -> set[int]:
    """Class ids present in class rasters, read block by block (never a whole scene at once).

    Raises:
        GeossclError: if a file holds negative values other than ``nodata``.
    """
    from .files import open_raster

    ids: set[int] = set()
    for path in paths:
        src = open_raster(path)
        found: set[int] = set()
        for _, window in src.block_windows(1):
            values = src.read(1, window=window, masked=True).compressed()
            if nodata is not None:
                values = values[values != nodata]
            found.update(int(v) for v in np.unique(values))
        negative = sorted(v for v in found if v < 0)
        if negative:
            listed = ", ".join(str(v) for v in negative)
            raise GeossclError(
                f"{path}: value(s) {listed} are not class ids (class ids are 0 or more); {nodata_hint(negative[0])}"
            )
        ids |= found
    return ids
