"""Segmentation labels as TorchGeo datasets: class-id rasters and vector layers.

Both return ``{"mask": int64 H×W, "crs", "bounds"}`` with :data:`IGNORE_INDEX` where
nothing is labelled, so sparse labels (a few polygons, a mask with nodata) train
through ``CrossEntropyLoss(ignore_index=IGNORE_INDEX)``. Combine with imagery by
intersection: ``mosaic & labels``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
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
from .categories import Legend, legend
from .grid import MapGrid
from .mosaic import Mosaic
from .vector import attribute_columns, read_layer

log = logging.getLogger("geosscl")

#: Label value of pixels without a label (nodata, outside every polygon).
IGNORE_INDEX = -1
#: Label value of pixels whose value is none of the classes' (see :meth:`ClassCoded.use_values`).
UNKNOWN = -2


class ClassCoded:
    """Labels whose masks hold class values (a raster's codes, a vector layer's numeric ids) that
    :meth:`use_values` turns into class ids (positions among the model's classes)."""

    _lookup: torch.Tensor | None = None

    def use_values(self, values: Sequence[int] | None) -> None:
        """Make masks hold class ids: the position in ``values`` of each pixel's value, or
        :data:`UNKNOWN` for a value not among them; None: the values are the ids."""
        if values is None:
            self._lookup = None
            return
        lookup = torch.full((max(values, default=0) + 2,), UNKNOWN, dtype=torch.int64)
        lookup[torch.as_tensor(list(values), dtype=torch.int64)] = torch.arange(len(values))
        self._lookup = lookup

    def _encode(self, mask: torch.Tensor) -> torch.Tensor:
        if self._lookup is None:
            return mask
        # Values beyond the largest class value land on the table's last entry, UNKNOWN.
        return torch.where(mask >= 0, self._lookup[mask.clamp(0, len(self._lookup) - 1)], mask)


class RasterLabels(ClassCoded, Mosaic):
    """Class-id rasters (one band) read as masks, in any CRS, aligned to the imagery.

    Read with nearest-neighbour resampling, so class ids are never blended. Pixels
    equal to the files' nodata or to ``ignore_value`` become :data:`IGNORE_INDEX`.
    The masks hold the files' values, or the class ids they stand for after
    :meth:`~ClassCoded.use_values`.

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

    def _sample(self, query: GeoSlice, first: str | None = None) -> dict[str, Any]:
        """``{"mask": int64 H×W (IGNORE_INDEX = unlabelled), "crs", "bounds"}``."""
        sample = super()._sample(query, first)
        values = sample.pop("image")[0]
        unlabelled = torch.isnan(values)
        if self.ignore_value is not None:
            unlabelled |= values == self.ignore_value
        sample["mask"] = self._encode(values.nan_to_num(0).to(torch.int64).masked_fill(unlabelled, IGNORE_INDEX))
        return sample

    @functools.cached_property
    def _legends(self) -> dict[str, Legend]:
        """What each file says of its values, read once."""
        return {path: legend(path) for path in self.files}

    def class_names(self) -> dict[int, str]:
        """Class names by value that the files carry (GDAL category names, raster attribute tables:
        :func:`~geosscl.data.categories.legend`), merged over the files, since a tile's table
        may list only the values it holds; empty when no file names a class.

        Raises:
            GeossclError: if two files give one class id different names.
        """
        merged: dict[int, tuple[str, str]] = {}  # id: (name, file)
        for path, found in self._legends.items():
            for i, name in found.names.items():
                if merged.setdefault(i, (name, path))[0] != name:
                    raise GeossclError(f"{path}: names class {i} {name!r}, {merged[i][1]} names it "
                                       f"{merged[i][0]!r}")
        return {i: name for i, (name, _) in sorted(merged.items())}

    def check_names(self, names: dict[int, str], whose: str) -> None:
        """Warn where the files name a class value otherwise than ``names`` (by value; ``whose``:
        "the model"): labels coded otherwise make every score or training step wrong without an
        error. Placeholders (``class 3``) contradict nothing, nor does case."""
        try:
            own = self.class_names()
        except GeossclError as exc:
            log.warning("%s", exc)
            return
        placeholder = re.compile(r"class \d+")
        clashes = [(i, a, names[i]) for i, a in own.items() if i in names and a.casefold() != names[i].casefold()
                   and not placeholder.fullmatch(a) and not placeholder.fullmatch(names[i])]
        if clashes:
            i, a, b = clashes[0]
            more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
            log.warning(f"{self.files[0]}: names class {i} {a!r} where {whose} has {b!r}{more}; that is only right "
                        f"if the labels use {whose}'s class ids")

    def colors(self) -> dict[int, list[int]]:
        """RGB (0-255) by class id from the first file's colour table (land-cover products, NLCD,
        ESA WorldCover, …, carry their legend's colours there), else from the colours of the
        files' raster attribute tables (ArcGIS keeps them there); empty without either."""
        from .files import open_raster

        try:
            table = open_raster(self.files[0]).colormap(1)
        except ValueError:  # no colour table
            colors: dict[int, list[int]] = {}
            for found in self._legends.values():
                for i, rgb in found.colors.items():
                    colors.setdefault(i, rgb)
            return colors
        # GDAL fills the entries a table skips with transparent black: those are no colour.
        return {int(i): list(rgba[:3]) for i, rgba in table.items() if len(rgba) < 4 or rgba[3] > 0}


class VectorLabels(ClassCoded, MapGrid, GeoDataset):
    """Polygons of a vector layer (GeoPackage, GeoJSON, Shapefile, …) rasterised on the fly.

    The layer is read once, reprojected to the dataset CRS and kept with a spatial
    index; each query burns the polygons it touches into a mask on the query's grid
    (a pixel is labelled when its centre is inside a polygon). TorchGeo's
    ``VectorDataset`` re-reads the file at every query and fills unlabelled pixels
    with 0, which makes sparse labels look like class 0; hence this class.

    Pixels outside every polygon are unlabelled, unless ``background`` names their
    class: footprint layers (buildings, fields) label only the objects, and every
    other pixel of the area they were drawn over is "not an object".

    Args:
        path: the vector file, or ``PATH|layername=NAME`` for one layer of a multi-layer file.
        class_column: column holding each polygon's class, ids (integers) or names.
        classes: class names in id order; names in ``class_column`` are mapped to
            their position here (default for a name column: the sorted distinct
            names).
        layer: layer name or index of a multi-layer file (instead of ``|layername=``).
        background: class of the pixels inside ``extent`` but outside every polygon:
            a name (of ``classes``, or added to the names as id 0 when the names
            come from the layer) or an integer id (a value, where ``class_column``
            holds values).
        values: the value of each of ``classes`` in a ``class_column`` of values
            (default: their ids), so that a background named there stands for its
            value, as the column's numbers do.
        extent: area the layer labels completely (with ``background``), in any CRS;
            default: the layer's bounding box. ``finetune`` and ``evaluate`` pass
            the imagery's footprint.
        crs: CRS to rasterise in (default: the layer's; set by ``imagery & labels``).
        res: resolution of the masks in units of ``crs``.

    Raises:
        GeossclError: if the file cannot be read, has no polygon, lacks the column,
            or holds a class name missing from ``classes``, or ``background`` is
            neither one of the classes nor an integer id.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        class_column: str,
        classes: Sequence[str] | None = None,
        layer: str | int | None = None,
        background: str | int | None = None,
        extent: gpd.GeoSeries | None = None,
        values: Sequence[int] | None = None,
        crs: Any = None,
        res: float | tuple[float, float] = 1.0,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        path = os.fspath(path)
        frame = read_layer(path, layer)
        if frame.crs is None:
            raise GeossclError(f"{path}: vector layer has no CRS")
        if class_column not in frame.columns:
            raise GeossclError(f"{path}: no column {class_column!r}; the layer has {', '.join(attribute_columns(frame))}")
        frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
        frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
        if frame.empty:
            raise GeossclError(f"{path}: no polygon features")
        column = frame[class_column]
        # Polygons drawn but not yet given a class (NULL, or an empty text): common while
        # digitising. Their pixels are unlabelled, also over a background class.
        missing = column.isna()
        if not pd.api.types.is_numeric_dtype(column):
            missing |= column.astype(str).str.strip().eq("")
        missing = missing.to_numpy()
        if missing.all():
            raise GeossclError(f"{path}: no polygon has a value in column {class_column!r}")
        if missing.any():
            log.warning("%s: %d polygon(s) without a value in column %r left unlabelled", path, missing.sum(), class_column)
        column = column[~missing]
        if pd.api.types.is_numeric_dtype(column):
            numbers = column.to_numpy(np.float64)
            fractional = numbers[numbers != np.round(numbers)]
            if fractional.size:
                raise GeossclError(f"{path}: column {class_column!r} holds class id {fractional[0]:g}, not a whole "
                                   "number (class ids are 0, 1, 2, ...; or give class names)")
            ids = column.astype(np.int64).to_numpy()
            self.classes = list(classes) if classes is not None else None
            #: Whether the class column holds values (ids, or a product's codes: see
            #: :meth:`~ClassCoded.use_values`) rather than names.
            self.numeric = True
        else:
            self.numeric = False
            names = column.astype(str)
            if classes is not None:
                self.classes = list(classes)
            else:
                self.classes = sorted(names.unique())
                if background is not None and str(background) not in self.classes:
                    self.classes.insert(0, str(background))  # the usual mask convention: 0 = background
            unknown = sorted(set(names) - set(self.classes))
            if unknown:
                raise GeossclError(f"{path}: class(es) {', '.join(unknown)} in column {class_column!r} are not among the "
                                  f"classes ({', '.join(self.classes)})")
            ids = names.map({name: i for i, name in enumerate(self.classes)}).to_numpy(np.int64)
        if (ids < 0).any():
            raise GeossclError(f"{path}: negative class id in column {class_column!r}")
        #: Class id of the pixels outside every polygon (inside the extent); None: unlabelled.
        self.background = None if background is None else self._class_id(path, background, values)
        if extent is not None and extent.crs is None:
            raise GeossclError(f"{path}: the extent given has no CRS")
        self.paths = path
        self.class_column = class_column
        self._extent = extent
        self.transforms = transforms
        # Unvalued polygons matter only where they cut a hole in the background.
        keep = ~missing | (self.background is not None)
        labelled = np.full(len(frame), IGNORE_INDEX, dtype=np.int64)
        labelled[~missing] = ids
        self._source = GeoDataFrame({"class_id": labelled[keep]}, geometry=frame.geometry.values[keep], crs=frame.crs)
        self._crs = CRS.from_user_input(crs) if crs is not None else CRS.from_user_input(frame.crs)
        self._res = (float(res), float(res)) if isinstance(res, int | float) else (float(res[0]), float(res[1]))
        self._reproject()

    def _class_id(self, path: str, background: str | int, values: Sequence[int] | None) -> int:
        if self.classes is not None and str(background) in self.classes:
            index = self.classes.index(str(background))
            # A column of values holds a class's value, not its position among the names.
            return int(values[index]) if self.numeric and values is not None else index
        try:
            value = int(str(background))
        except ValueError:
            known = f"; the classes are {', '.join(self.classes)}" if self.classes else ""
            raise GeossclError(f"{path}: background class {background!r} is not a class name or id{known}") from None
        if value < 0:
            raise GeossclError(f"{path}: background class id {value} is negative")
        return value

    def _reproject(self) -> None:
        shapes = self._source.to_crs(self._crs)
        self._geometries = shapes.geometry.values
        self._ids = shapes["class_id"].to_numpy()
        self._tree = shapely.STRtree(self._geometries)
        if self.background is None or self._extent is None:
            covered = shapely.box(*shapes.total_bounds)
        else:
            # Densified first: a reprojected rectangle's edges are curves.
            x0, y0, x1, y1 = self._extent.total_bounds
            source = self._extent.segmentize(max(x1 - x0, y1 - y0) / 64)
            covered = shapely.union_all(source.to_crs(self._crs).values)
        self._covered = covered
        always = pd.IntervalIndex.from_tuples([(pd.Timestamp.min, pd.Timestamp.max)], closed="both", name="datetime")
        self.index = GeoDataFrame({"filepath": [self.paths]}, index=always, geometry=[covered], crs=self._crs)

    @property
    def class_ids(self) -> set[int]:
        """Class ids the layer labels: its polygons' and the background's."""
        ids = {int(i) for i in np.unique(self._ids) if i != IGNORE_INDEX}
        return ids if self.background is None else ids | {self.background}

    def covers_any(self, region: shapely.Geometry) -> bool:
        """Whether any labelled pixel lies in ``region`` (same CRS): a polygon, or the background, overlaps it."""
        if self.background is not None:
            return shapely.intersection(self._covered, region).area > 0
        hits = self._tree.query(region, predicate="intersects")
        return any(shapely.intersection(self._geometries[i], region).area > 0 for i in hits)

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """``{"mask": int64 H×W (IGNORE_INDEX = unlabelled), "crs", "bounds"}`` on the query's grid."""
        x, y, _ = self._disambiguate_slice(query)
        width = max(1, round((x.stop - x.start) / x.step))
        height = max(1, round((y.stop - y.start) / y.step))
        transform = Affine(x.step, 0.0, x.start, 0.0, -y.step, y.stop)
        hits = self._tree.query(shapely.box(x.start, y.start, x.stop, y.stop))
        shapes = list(zip(self._geometries[hits], self._ids[hits].tolist()))
        if self.background is not None:
            shapes.insert(0, (self._covered, self.background))  # burnt first: polygons overwrite it
        mask = np.full((height, width), IGNORE_INDEX, dtype=np.int64)
        if shapes:
            burned = rasterio.features.rasterize(
                shapes, out_shape=(height, width), transform=transform, fill=IGNORE_INDEX, dtype="int32",
            )
            mask = burned.astype(np.int64)
        sample: dict[str, Any] = {"mask": self._encode(torch.from_numpy(mask)), "crs": self.crs, "bounds": query}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def open_labels(
    paths: Sequence[str | os.PathLike],
    class_column: str | None = None,
    classes: Sequence[str] | None = None,
    nodata: float | None = None,
    background: str | None = None,
    extent: gpd.GeoSeries | None = None,
    values: Sequence[int] | None = None,
    default_background: str | None = None,
    default_column: str | None = None,
) -> tuple[RasterLabels | VectorLabels, set[int]]:
    """Class rasters, or one vector layer, as a labels dataset, with the set of class ids it holds.

    Args:
        nodata: value of the class rasters meaning "unlabelled", besides the
            nodata value their files declare (many label sets, Sen1Floods11's
            among them, mark unlabelled pixels with -1 or 255 without declaring it).
        background, extent, values: a vector layer's class outside its polygons, the
            area it holds there, and the values of ``classes`` (see :class:`VectorLabels`).
        default_background: the background of a vector layer given no ``background``:
            that of the model the labels score or train further, which learnt that a
            pixel outside every polygon is of this class. ``background=""`` (no name)
            refuses it: the pixels outside the polygons are unlabelled (sparse
            polygons of every class, scored by a model of footprints).
        default_column: the class column of a vector layer given no ``class_column``,
            where the layer has it: the column the model's own labels were read from.

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
    if background and rasters:
        raise GeossclError(f"{paths[0]}: --background-class is for a vector layer; a class raster holds its background class itself")
    if len(rasters) == len(paths):
        labels = RasterLabels(paths, ignore_value=nodata)
        return labels, _raster_ids(labels.files, nodata)
    if rasters or len(paths) > 1:
        raise GeossclError(f"labels: give class rasters, or one vector layer ({', '.join(paths)})")
    if nodata is not None:
        raise GeossclError(f"{paths[0]}: --label-nodata is for class rasters; a vector layer's unlabelled pixels are those outside its polygons")
    if not class_column:
        columns = attribute_columns(read_layer(paths[0]))
        if default_column in columns:
            class_column = default_column
            log.info("%s: classes read from its column %r, the one the model's labels came from "
                     "(--class-column names another)", paths[0], class_column)
        else:
            has = (f"the layer has {', '.join(columns)}" if columns else
                   "the layer has none: add one (for footprints of one class, its name in every row)")
            if default_column:
                has = f"the model's labels came from a column {default_column!r}; {has}"
            raise GeossclError(f"{paths[0]}: vector labels need --class-column, the column of each polygon's class; {has}")
    if background is None and default_background is not None:
        background = default_background
        log.info("%s: the pixels outside its polygons are taken as %r, the model's background class "
                 "(--background-class names another; --no-background-class leaves them unlabelled)", paths[0],
                 background)
    background = background or None
    labels = VectorLabels(paths[0], class_column, classes=classes, background=background, extent=extent, values=values)
    return labels, labels.class_ids


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
