"""xarray in and out of :func:`geosscl.segment`: a DataArray's grid, CRS, nodata and band names, and a class map
returned as a DataArray on the same coordinates.

xarray holds no georeferencing of its own, and each producer keeps it its own way: rioxarray and odc-stac in a
``spatial_ref`` coordinate (CF grid mapping, ``crs_wkt`` and GDAL's ``GeoTransform``), stackstac in ``crs`` and
``transform`` attributes with coordinates at pixel corners, CF files in grid-mapping parameters. Reading those few
attributes here spares every user rioxarray as a dependency; what is read is then written to a GeoTIFF, so that a
DataArray goes through the very reader, checks and tiled inference a file does (one way to segment).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError
from rasterio.transform import Affine

from .errors import GeossclError

log = logging.getLogger("geosscl")

X_NAMES = ("x", "lon", "longitude", "easting")
Y_NAMES = ("y", "lat", "latitude", "northing")
#: Dimensions that hold bands: rioxarray and stackstac call it ``band``; ``Dataset.to_array()`` makes ``variable``.
BAND_NAMES = ("band", "bands", "variable")
#: Rows written to the temporary GeoTIFF at a time: a dask-backed array is computed a strip at a time.
STRIP_ROWS = 512


def is_xarray(obj: Any) -> bool:
    """Whether ``obj`` is an xarray ``DataArray`` or ``Dataset`` (without importing xarray for files)."""
    return type(obj).__module__.split(".")[0] == "xarray"


@dataclass
class Grid:
    """Where a DataArray's pixels are.

    Attributes:
        crs: its coordinate reference system.
        transform: the north-up transform of its ``y × x`` pixels as written to the GeoTIFF.
        x, y: its coordinates as given (any order), and their dimensions' names.
        centred: whether coordinates are pixel centres (xarray's and CF's convention), or corners (stackstac's).
        flip_x, flip_y: whether ``x`` descends or ``y`` ascends (the GeoTIFF holds them flipped).
    """

    crs: CRS
    transform: Affine
    x: np.ndarray
    y: np.ndarray
    x_dim: str
    y_dim: str
    centred: bool
    flip_x: bool
    flip_y: bool

    def coordinates(self, transform: Affine, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """x and y coordinates of a north-up grid, in the DataArray's order and convention.

        Where the grid is the DataArray's, or a window of it, its very values are returned, so that xarray aligns
        the class map with the imagery (coordinates computed anew differ in the last bits).
        """
        x_up = self.x[::-1] if self.flip_x else self.x
        y_up = self.y[::-1] if self.flip_y else self.y
        col = (transform.c - self.transform.c) / self.transform.a
        row = (transform.f - self.transform.f) / self.transform.e
        same_res = math.isclose(transform.a, self.transform.a) and math.isclose(transform.e, self.transform.e)
        if same_res and abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
            col, row = round(col), round(row)
            if 0 <= col and col + width <= len(x_up) and 0 <= row and row + height <= len(y_up):
                xs, ys = x_up[col:col + width], y_up[row:row + height]
                return (xs[::-1] if self.flip_x else xs), (ys[::-1] if self.flip_y else ys)
        off = 0.5 if self.centred else 0.0
        xs = transform.c + (np.arange(width) + off) * transform.a
        ys = transform.f + (np.arange(height) + off) * transform.e
        if not self.centred:
            # A corner coordinate is the corner at the smaller index in the DataArray's own order.
            xs = xs + (transform.a if self.flip_x else 0.0)
            ys = ys + (transform.e if self.flip_y else 0.0)
        return (xs[::-1] if self.flip_x else xs), (ys[::-1] if self.flip_y else ys)


def as_bands(data: Any, label: str, nodata: float | None = None) -> tuple[Any, str | None]:
    """``data`` as a DataArray ``(each, band, y, x)`` or ``(band, y, x)``; and the name of its ``each`` dimension.

    A Dataset's data variables on the y/x grid are its bands, in order. Dimensions of size 1 other than y and x are
    dropped. One more dimension (dates of a time series, say) is segmented entry by entry. ``nodata`` given, the
    variables' own no-data values need not agree.
    """
    import xarray as xr

    if isinstance(data, xr.Dataset):
        names = [name for name, var in data.data_vars.items() if _spatial_dims(var, label, strict=False)]
        if not names:
            raise GeossclError(f"{label}: no data variable has x and y dimensions")
        declared = [_declared_nodata(data[name].attrs) for name in names]
        fills = {"none" if v is None else str(v): v for v in declared}
        if len(fills) > 1 and nodata is None:  # keyed by text: NaN is one value here
            raise GeossclError(f"{label}: the variables declare different no-data values "
                               f"({', '.join(sorted(fills))}); pass one as nodata=")
        array = data[names].to_array(dim="band")
        fill = next(iter(fills.values()))
        if fill is not None:
            array.attrs["_FillValue"] = fill
        # A CF file's grid mapping is a variable of its own, which the bands name (xarray keeps it a data variable
        # unless opened with decode_coords="all"); the array of the bands keeps it as a coordinate.
        mapping = data[names[0]].attrs.get("grid_mapping") or data[names[0]].encoding.get("grid_mapping")
        if mapping in data.variables:
            array = array.assign_coords({mapping: data[mapping]})
            array.attrs["grid_mapping"] = mapping
    elif isinstance(data, xr.DataArray):
        array = data
    else:
        raise GeossclError(f"{label}: an xarray DataArray or Dataset is needed, not {type(data).__name__}")
    y_dim, x_dim = _spatial_dims(array, label)
    band_dims = [d for d in array.dims if d in BAND_NAMES]
    if len(band_dims) > 1:
        raise GeossclError(f"{label}: two band dimensions {tuple(band_dims)}")
    if not band_dims:
        array = array.expand_dims("band") if "band" in array.coords else array.expand_dims(band=1)
        band_dims = ["band"]
    band = band_dims[0]
    others = [d for d in array.dims if d not in (y_dim, x_dim, band)]
    array = array.isel({d: 0 for d in others if array.sizes[d] == 1})
    others = [d for d in others if array.sizes[d] > 1]
    if len(others) > 1:
        raise GeossclError(f"{label}: dimensions {tuple(array.dims)}: besides the bands ('band') and y, x, segment "
                           f"takes one more (each entry is segmented); select along {', '.join(map(repr, others[1:]))}")
    order = [*others, band, y_dim, x_dim]
    return array.transpose(*order), (others[0] if others else None)


def georeference(array: Any, label: str) -> Grid:
    """The CRS and north-up transform of a DataArray's y/x grid; raises GeossclError where they cannot be known."""
    y_dim, x_dim = array.dims[-2:]
    crs = _crs(array, label)
    x, y = _coordinate(array, x_dim, label), _coordinate(array, y_dim, label)
    stated = _stated_transform(array, label)
    dx, dy = _step(x, x_dim, label, stated and stated.a), _step(y, y_dim, label, stated and stated.e)
    centred = True
    if stated is not None and math.isclose(abs(stated.a), abs(dx)) and math.isclose(abs(stated.e), abs(dy)):
        # A transform kept beside the coordinates tells where in the pixel they are; it may be stale (kept through
        # slicing), so only the coordinates' fraction of a pixel from its origin is taken from it.
        frac = ((x[0] - stated.c) / stated.a) % 1.0
        centred = not (min(frac, 1 - frac) < 0.01)
    off = 0.5 if centred else 0.0
    own = Affine(dx, 0.0, x[0] - off * dx, 0.0, dy, y[0] - off * dy)  # in the DataArray's own order
    flip_x, flip_y = dx < 0, dy > 0
    width, height = len(x), len(y)
    north_up = Affine(abs(dx), 0.0, own.c + (dx * width if flip_x else 0.0),
                      0.0, -abs(dy), own.f + (dy * height if flip_y else 0.0))
    # The coordinates as given (their dtype too), for the class map to carry exactly.
    return Grid(crs, north_up, array[x_dim].values, array[y_dim].values, x_dim, y_dim, centred, flip_x, flip_y)


def write_geotiff(array: Any, grid: Grid, path: str, label: str, nodata: float | None = None) -> None:
    """Write a ``(band, y, x)`` DataArray north-up to ``path``, with its CRS, nodata and band names."""
    dtype = np.dtype(array.dtype)
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    elif dtype.kind == "f" and dtype.itemsize < 4:
        dtype = np.dtype(np.float32)
    elif dtype.kind not in "uif":
        raise GeossclError(f"{label}: values of type {array.dtype} are not imagery")
    fill = _declared_nodata(array.attrs) if nodata is None else nodata
    if fill is None and dtype.kind == "f":
        fill = float("nan")
    count, height, width = array.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype.name, crs=grid.crs,
                   transform=grid.transform, nodata=fill, tiled=True, blockxsize=256, blockysize=256,
                   BIGTIFF="IF_SAFER")
    if grid.flip_x:
        array = array.isel({grid.x_dim: slice(None, None, -1)})
    if grid.flip_y:
        array = array.isel({grid.y_dim: slice(None, None, -1)})
    try:
        with rasterio.open(path, "w", **profile) as dst:
            for top in range(0, height, STRIP_ROWS):
                strip = np.asarray(array.isel({grid.y_dim: slice(top, top + STRIP_ROWS)}).values, dtype=dtype)
                dst.write(strip, window=rasterio.windows.Window(0, top, width, strip.shape[1]))
            for i, name in enumerate(_band_names(array), start=1):
                if name:
                    dst.set_band_description(i, name)
    except (ValueError, OverflowError) as exc:
        raise GeossclError(f"{label}: cannot be written as a raster: {exc}") from exc


def class_map(classes: np.ndarray, profile: dict[str, Any], grid: Grid, values: list[int], names: list[str],
              colors: list[list[int]], nodata: int) -> Any:
    """A class array and its profile (north-up, as :func:`geosscl.prediction.segment` returns them) as a DataArray.

    It is on the DataArray's coordinates and in its order, with CF's categorical attributes (``flag_values``,
    ``flag_meanings``; ``flag_colors`` as ESA's land-cover maps write them), ``_FillValue`` and a ``spatial_ref``
    coordinate, which rioxarray reads (``.rio.to_raster()`` writes the map as a GeoTIFF).
    """
    import xarray as xr

    transform, height, width = profile["transform"], profile["height"], profile["width"]
    xs, ys = grid.coordinates(transform, width, height)
    if grid.flip_x:
        classes = classes[:, ::-1]
        transform = transform @ Affine.translation(width, 0) @ Affine.scale(-1, 1)
    if grid.flip_y:
        classes = classes[::-1, :]
        transform = transform @ Affine.translation(0, height) @ Affine.scale(1, -1)
    wkt = profile["crs"].to_wkt()
    spatial_ref = xr.DataArray(0, attrs={"crs_wkt": wkt, "spatial_ref": wkt,
                                         "GeoTransform": " ".join(repr(v) for v in transform.to_gdal())})
    attrs = {
        "long_name": "class",
        "flag_values": np.asarray(values, dtype=np.uint8),
        "flag_meanings": " ".join("_".join(str(n).split()) for n in names),
        "flag_colors": " ".join("#{:02x}{:02x}{:02x}".format(*c[:3]) for c in colors),
        "_FillValue": np.uint8(nodata),
        "grid_mapping": "spatial_ref",
    }
    return xr.DataArray(np.ascontiguousarray(classes), dims=(grid.y_dim, grid.x_dim), name="classes", attrs=attrs,
                        coords={grid.y_dim: ys, grid.x_dim: xs, "spatial_ref": spatial_ref})


@contextlib.contextmanager
def as_raster(array: Any, grid: Grid, label: str, nodata: float | None = None,
              folder: str | None = None) -> Iterator[str]:
    """A ``(band, y, x)`` DataArray as a temporary GeoTIFF (in ``folder``, default the system's temporary folder);
    messages of geosscl name the DataArray, not the file."""
    with tempfile.TemporaryDirectory(prefix=".geosscl-", dir=folder) as scratch:
        path = os.path.join(scratch, "dataarray.tif")
        write_geotiff(array, grid, path, label, nodata)
        relabel = _Relabel(path, label)
        log.addFilter(relabel)
        try:
            yield path
        except GeossclError as exc:
            raise GeossclError(str(exc).replace(path, label)) from exc
        finally:
            log.removeFilter(relabel)


def label_of(data: Any) -> str:
    """How messages name a DataArray or Dataset."""
    name = getattr(data, "name", None)
    kind = type(data).__name__
    return f"{kind} {name!r}" if name is not None else kind


class _Relabel(logging.Filter):
    """Warnings about the temporary file are about the DataArray."""

    def __init__(self, path: str, label: str) -> None:
        super().__init__()
        self.path, self.label = path, label

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.path in message:
            record.msg, record.args = message.replace(self.path, self.label), ()
        return True


def _spatial_dims(array: Any, label: str, strict: bool = True) -> tuple[str, str] | None:
    y = [d for d in array.dims if str(d).lower() in Y_NAMES]
    x = [d for d in array.dims if str(d).lower() in X_NAMES]
    if len(y) == 1 and len(x) == 1:
        return y[0], x[0]
    if not strict:
        return None
    raise GeossclError(f"{label}: dimensions {tuple(array.dims)} name no single y and x (one of "
                       f"{', '.join(Y_NAMES)} and one of {', '.join(X_NAMES)})")


def _coordinate(array: Any, dim: str, label: str) -> np.ndarray:
    if dim not in array.coords:
        raise GeossclError(f"{label}: dimension {dim!r} has no coordinates; map coordinates of the pixels are needed")
    values = np.asarray(array[dim].values)
    if values.ndim != 1 or values.dtype.kind not in "iuf":
        raise GeossclError(f"{label}: coordinate {dim!r} is not numeric")
    return values.astype(np.float64)


def _step(values: np.ndarray, dim: str, label: str, stated: float | None) -> float:
    """The coordinate's spacing; raises GeossclError for an irregular axis."""
    if len(values) < 2:
        if not stated:
            raise GeossclError(f"{label}: one pixel along {dim!r} and no transform: its pixel size is unknown")
        return float(stated)
    step = (values[-1] - values[0]) / (len(values) - 1)
    if step == 0 or np.abs(np.diff(values) - step).max() > 1e-6 * abs(step):
        raise GeossclError(f"{label}: coordinate {dim!r} is not evenly spaced; geosscl reads regular grids "
                           "(resample it first, e.g. with rioxarray's .rio.reproject)")
    return float(step)


def _grid_mapping(array: Any) -> Any:
    name = array.attrs.get("grid_mapping") or array.encoding.get("grid_mapping") or "spatial_ref"
    return array.coords[name] if name in array.coords else None


def _crs(array: Any, label: str) -> CRS:
    mapping = _grid_mapping(array)
    candidates: list[Any] = []
    if mapping is not None:
        candidates += [mapping.attrs.get("crs_wkt"), mapping.attrs.get("spatial_ref")]
    candidates += [array.attrs.get("crs"), array.attrs.get("crs_wkt"), array.attrs.get("spatial_ref")]
    for value in candidates:
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            return value if isinstance(value, CRS) else CRS.from_user_input(value)
        except CRSError as exc:
            raise GeossclError(f"{label}: CRS {str(value)[:60]!r} is not one GDAL knows ({exc})") from exc
    if mapping is not None and mapping.attrs.get("grid_mapping_name"):
        from pyproj import CRS as ProjCRS
        from pyproj.exceptions import CRSError as ProjError

        try:
            return CRS.from_wkt(ProjCRS.from_cf(dict(mapping.attrs)).to_wkt())
        except (ProjError, CRSError) as exc:
            raise GeossclError(f"{label}: its CF grid mapping is not a CRS ({exc})") from exc
    named = array.attrs.get("grid_mapping") or array.encoding.get("grid_mapping")
    if named and mapping is None:
        raise GeossclError(f"{label}: no CRS: its grid mapping {named!r} is not among its coordinates; open the file "
                           "with decode_coords='all', or segment the Dataset; or set a CRS, e.g. with rioxarray: "
                           ".rio.write_crs('EPSG:32633')")
    raise GeossclError(f"{label}: no CRS (neither a 'spatial_ref' coordinate with 'crs_wkt' nor a 'crs' attribute); "
                       "set one, e.g. with rioxarray: .rio.write_crs('EPSG:32633')")


def _stated_transform(array: Any, label: str) -> Affine | None:
    """A transform kept with the DataArray (GDAL's ``GeoTransform``, or a ``transform`` attribute), if any."""
    mapping = _grid_mapping(array)
    gdal = mapping.attrs.get("GeoTransform") if mapping is not None else None
    stated = array.attrs.get("transform")
    try:
        if gdal is not None:
            transform = Affine.from_gdal(*(float(v) for v in str(gdal).split()))
        elif stated is not None:
            transform = Affine(*(float(v) for v in tuple(stated)[:6]))
        else:
            return None
    except (TypeError, ValueError):
        return None
    if transform.b or transform.d:
        raise GeossclError(f"{label}: its transform is rotated or sheared; geosscl reads north-up grids "
                           "(warp it first, e.g. with rioxarray's .rio.reproject)")
    return transform


def _declared_nodata(attrs: dict[str, Any]) -> float | None:
    for key in ("_FillValue", "nodata", "missing_value"):
        value = attrs.get(key)
        if value is not None:
            value = np.asarray(value).ravel()
            if value.size:
                return float(value[0])
    return None


def _band_names(array: Any) -> list[str | None]:
    """Band names: a band coordinate of strings (stackstac, Dataset.to_array), else rioxarray's ``long_name``.

    rioxarray keeps the file's band descriptions in ``long_name`` and numbers the bands 1..n in the coordinate;
    selecting bands keeps ``long_name`` whole, so the numbers say which description each band has.
    """
    dim = array.dims[0]
    count = array.shape[0]
    values = np.asarray(array[dim].values) if dim in array.coords else None
    if values is not None and values.dtype.kind in "OUS":
        return [str(v) for v in values]
    names = array.attrs.get("long_name")
    if not isinstance(names, list | tuple):
        return [None] * count
    if values is not None and values.dtype.kind in "iu" and all(1 <= v <= len(names) for v in values):
        return [str(names[v - 1]) if names[v - 1] else None for v in values]
    if len(names) == count:
        return [str(n) if n else None for n in names]
    return [None] * count
