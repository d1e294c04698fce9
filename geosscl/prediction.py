"""``geosscl.predict``: a class map of a whole scene or mosaic, written as a Cloud-Optimised GeoTIFF.

The scene is segmented block by block by :class:`~geosscl.inference.TiledSegmenter`
(the engine ``evaluate`` and the QGIS plugin use too) and every block is written as
soon as it is done, so memory does not grow with the scene. GDAL's COG driver
cannot be written window by window, so blocks go to a tiled GeoTIFF beside the output
first, which the COG driver then copies (with overviews) into the output's temporary
name; only a finished file is renamed to the output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import Affine
from rasterio.windows import Window

from .data import Mosaic
from .data.bandnames import check_band_names, only_these_bands
from .data.categories import write_category_names
from .data.files import find_rasters
from .data.mosaic import BAND_IN_NAME, files_label, named_as_bands, places_of
from .data.stats import warn_other_units
from .dataarrays import as_bands, as_raster, class_map, georeference, is_xarray, label_of
from .errors import GeossclError
from .inference import TiledSegmenter, check_bands, resolve_device
from .modelfile import ModelInfo, load_model
from .models import SegmentationNetwork
from .output import atomic_output, check_output, check_suffix
from .precision import check_precision

#: Class value of pixels without input (nodata or outside the footprint).
NODATA_CLASS = 255
#: Creation options of the class map; ``--co`` overrides them.
COG_OPTIONS = {"BLOCKSIZE": "512", "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "NEAREST", "BIGTIFF": "IF_SAFER"}

#: Share of its extent below which a mosaic's files are said to lie far apart: :func:`predict` warns, and
#: leaves the ground between them out of the class map's file (a sparse GeoTIFF).
SCATTERED = 0.1

#: GDAL block cache while writing, MiB.
GDAL_CACHE_MB = 128

log = logging.getLogger("geosscl")
Model = str | os.PathLike | tuple[SegmentationNetwork, ModelInfo]
Progress = Callable[[int, int], None]


def open_scene(
    scene: str | os.PathLike | Iterable[str | os.PathLike],
    info: ModelInfo,
    bands: list[int] | None = None,
    resample: bool = True,
    gsd_tolerance: float = 0.1,
    nodata: float | None = None,
) -> Mosaic:
    """The scene as a mosaic the model can read: its bands, and its ground sampling distance.

    Args:
        scene: files, a directory, a glob or a VRT; several files are one mosaic.
        info: the model's metadata.
        bands: 1-based bands of the scene to feed the model, in order (default: the
            bands the model was trained on).
        resample: read at the model's GSD when the scene's differs by more than
            ``gsd_tolerance`` (relative); otherwise only warn.
        gsd_tolerance: relative GSD difference accepted silently.
        nodata: the scene's value meaning "no data", over what its files declare
            (default: the one the model was trained with, :attr:`ModelInfo.nodata`).

    Raises:
        GeossclError: no raster, no CRS, missing bands, a band count the model does not take, or bands
            named as the model's in another order (unless ``bands`` were given: then a warning).
    """
    files = find_rasters(scene)
    source = files_label(files)
    chosen = bands is not None
    nodata = info.nodata if nodata is None else nodata
    if not chosen:
        whole = Mosaic(files, nodata=nodata)
        if only_these_bands(info.band_names, whole.all_band_names):
            # The model's bands alone, named as its are (an export of just those): its band numbers are of the
            # stack it was trained on, not of this one.
            bands = list(range(1, len(whole.all_band_names) + 1))
        else:
            # Names first: a stack of the model's bands in another order is told which -b reads it.
            check_band_names(info.band_names, whole.all_band_names, info.bands, source, "the model")
            check_bands(len(whole.all_band_names), info, source)
            bands = info.bands
    elif len(bands) != info.in_channels:
        raise GeossclError(f"{source}: --bidx picks {len(bands)} band(s); the model takes {info.in_channels}")
    mosaic = Mosaic(files, bands=bands, nodata=nodata)
    if chosen:
        check_band_names(info.band_names, mosaic.all_band_names, bands, source, "the model", chosen=True)
    warn_other_units(mosaic, info.band_mean, source, "the model's training imagery")
    scene_gsd, model_gsd = mosaic.gsd, info.training_gsd()
    if model_gsd and scene_gsd and abs(scene_gsd / model_gsd - 1) > gsd_tolerance:
        ratio = model_gsd / scene_gsd
        if resample:
            log.warning(f"{source}: ground sampling distance {scene_gsd:.3g} m differs from the model's {model_gsd:.3g} m; "
                        f"reading at the model's (output pixels are {ratio:.3g}× the scene's)")
            mosaic.res = (mosaic.res[0] * ratio, mosaic.res[1] * ratio)
        else:
            log.warning(f"{source}: ground sampling distance {scene_gsd:.3g} m differs from the model's {model_gsd:.3g} m; "
                        "predicting at the scene's as asked")
    return mosaic


def _scattered(mosaic: Mosaic, area: tuple[float, float, float, float], width: int, height: int) -> bool:
    """Whether the files of a mosaic cover less than :data:`SCATTERED` of the map they span (tiles of places far
    apart, read as one mosaic: one class map of all the ground between them); warns if so."""
    if len(mosaic.files) < 2:
        return False
    covered = float(mosaic.footprint().area.iloc[0]) / ((area[2] - area[0]) * (area[3] - area[1]))
    if covered >= SCATTERED:
        return False
    log.warning(f"{files_label(mosaic.files)}: its {len(mosaic.files)} files cover {100 * covered:.2g} % of the "
                f"{width:,} × {height:,} px class map their bounds span: the rest is nodata, left out of the file "
                "(a sparse GeoTIFF, which GDAL-based software reads; --co SPARSE_OK=FALSE writes it), and writing the "
                "map takes time; --each writes one map per file, each of its own extent")
    return True


def _extent(mosaic: Mosaic) -> tuple[float, float, float, float]:
    x, y, _ = mosaic.bounds
    return x.start, y.start, x.stop, y.stop


def _model(model: Model) -> tuple[SegmentationNetwork, ModelInfo]:
    network, info = model if isinstance(model, tuple) else load_model(model)
    if max(info.map_values) >= NODATA_CLASS:
        raise GeossclError(f"{model if not isinstance(model, tuple) else 'model'}: class value {max(info.map_values)} does "
                           f"not fit a uint8 class map with {NODATA_CLASS} as nodata (at most {NODATA_CLASS - 1})")
    return network, info


def segment(
    scene: str | os.PathLike | Iterable[str | os.PathLike] | Mosaic,
    model: Model,
    bounds: tuple[float, float, float, float] | None = None,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    bands: list[int] | None = None,
    resample: bool = True,
    nodata: float | None = None,
    precision: str = "32",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Class map of a window or a small scene, in memory.

    Args:
        scene: as for :func:`predict`, or a :class:`~geosscl.data.Mosaic` already opened, or an xarray
            ``DataArray`` / ``Dataset`` (see Returns).
        model: a model file, or ``(network, info)`` from :func:`geosscl.load_model`.
        bounds: ``(minx, miny, maxx, maxy)`` in the scene CRS (default: the whole scene).
        the others: as for :func:`predict`.

    Returns:
        ``(classes, profile)``: ``H×W`` uint8 class values (the model's ``map_values``; 255 = no input) and a rasterio
        profile (CRS, transform, nodata) to write it with.

        For an xarray scene, a ``DataArray`` of the class values on the scene's own ``y``/``x`` coordinates (a
        ``band`` dimension, or a Dataset's variables, are the bands; one more dimension, such as ``time``, is
        segmented entry by entry and kept), with CF's ``flag_values`` / ``flag_meanings`` and a ``spatial_ref``
        coordinate (see :mod:`geosscl.dataarrays`).
    """
    if is_xarray(scene):
        return _segment_xarray(scene, model, bounds, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                               device=device, bands=bands, resample=resample, nodata=nodata, precision=precision)
    network, info = _model(model)
    mosaic = scene if isinstance(scene, Mosaic) else open_scene(scene, info, bands, resample, nodata=nodata)
    engine = TiledSegmenter(network, info, device=device, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            precision=precision)
    area = mosaic.snap(bounds or _extent(mosaic))
    width, height, transform = _grid(mosaic, area)
    classes = np.full((height, width), NODATA_CLASS, dtype=np.uint8)
    for block in engine.blocks(mosaic, area):
        window = _window(block.bounds, transform)
        classes[window.toslices()] = _to_uint8(block.classes, info)
    profile = dict(driver="GTiff", dtype="uint8", count=1, width=width, height=height, crs=mosaic.crs,
                   transform=transform, nodata=NODATA_CLASS)
    return classes, profile


def _segment_xarray(scene: Any, model: Model, bounds: tuple[float, float, float, float] | None,
                    **options: Any) -> Any:
    """:func:`segment` of a DataArray or Dataset: through a temporary GeoTIFF of each entry, returned as a DataArray."""
    import xarray as xr

    label = label_of(scene)
    array, each = as_bands(scene, label, options["nodata"])
    grid = georeference(array, label)
    network, info = _model(model)
    values, names, colors = info.map_values, info.class_names, info.class_colors
    maps = []
    for entry in range(array.sizes[each]) if each else [None]:
        image = array if entry is None else array.isel({each: entry})
        where = label if entry is None else f"{label} at {each} {_entry_name(array, each, entry)}"
        with as_raster(image, grid, where, options["nodata"]) as path:
            classes, profile = segment(path, (network, info), bounds, **options)
        maps.append(class_map(classes, profile, grid, values, names, colors, NODATA_CLASS))
    if each is None:
        return maps[0]
    stacked = xr.concat(maps, dim=each, combine_attrs="override")
    return stacked.assign_coords({each: array[each]}) if each in array.coords else stacked


def _predict_xarray(scene: Any, model: Model, out: str | os.PathLike, **options: Any) -> str:
    """:func:`predict` of a DataArray or Dataset, through a temporary GeoTIFF beside ``out``."""
    label = label_of(scene)
    array, each = as_bands(scene, label, options["nodata"])
    if each is not None:
        raise GeossclError(f"{label}: {array.sizes[each]} entries along {each!r}; predict writes one map: select one "
                           f"(.isel({each}=0)), or segment() them all")
    check_suffix(out, (".tif", ".tiff"), "the class map is a Cloud-Optimised GeoTIFF")
    for path in (out, options["probabilities"], options["vector"], options["preview"]):
        if path is not None:  # before the array is copied, which takes long for a large one
            check_output(path, options["overwrite"])
    grid = georeference(array, label)
    folder = os.path.dirname(os.path.abspath(out))
    with as_raster(array, grid, label, options["nodata"], folder=folder) as path:
        return predict(path, model, out, **options)


def _entry_name(array: Any, dim: str, index: int) -> str:
    return str(array[dim].values[index]) if dim in array.coords else f"index {index}"


def predict(
    scene: str | os.PathLike | Iterable[str | os.PathLike] | Mosaic,
    model: Model,
    out: str | os.PathLike,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    bands: list[int] | None = None,
    probabilities: str | os.PathLike | None = None,
    vector: str | os.PathLike | None = None,
    preview: str | os.PathLike | None = None,
    preview_rgb: tuple[int, int, int] = (1, 2, 3),
    creation_options: dict[str, str] | None = None,
    overwrite: bool = False,
    resample: bool = True,
    nodata: float | None = None,
    simplify: float = 1.0,
    block_size: int = 1024,
    precision: str = "32",
    progress: Progress | None = None,
) -> str:
    """Segment a scene or mosaic into a class-map COG; return the output path.

    Args:
        scene: GeoTIFFs, a directory, a glob or a VRT; several files are one mosaic;
            or a mosaic :func:`open_scene` opened for the model.
        model: a model file, or ``(network, info)`` from :func:`geosscl.load_model`.
        out: the class map to write: uint8 class values (the model's ``map_values``), 255 where there is no input,
            colour table and class names from the model.
        tile_size, overlap: tiles fed to the model, pixels (default: the model's).
        batch_size: tiles per forward pass.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        bands: 1-based scene bands to feed the model, in order.
        probabilities: also write the class probabilities (float32, one band per class).
        vector: also write one polygon per connected class region (GeoPackage layer
            ``classes`` with ``class_id`` and ``class_name``), but none of the model's
            :attr:`~geosscl.modelfile.ModelInfo.background_class`.
        preview: also write a PNG: the scene | the class map with a legend.
        preview_rgb: 1-based positions of red, green and blue among the model's bands.
        creation_options: GDAL COG creation options overriding :data:`COG_OPTIONS`.
        overwrite: replace existing outputs.
        resample: read at the model's GSD when the scene's differs (see :func:`open_scene`).
        nodata: the scene's value meaning "no data", over what its files declare (default: the
            model's, see :func:`open_scene`).
        simplify: tolerance of the polygon simplification in pixels (0: exact pixel
            edges); neighbouring polygons keep shared edges, so no gaps open.
        block_size: side of the blocks segmented and written at a time, pixels.
        precision: ``"32"``, or ``"bf16"``: the model runs under bfloat16 autocast, faster where the hardware has
            bfloat16 arithmetic (recent GPUs; CPUs with AVX512-BF16 or AMX); a few pixels in a thousand, where two
            classes are nearly tied, change class (see :class:`~geosscl.inference.TiledSegmenter`).
        progress: called with ``(blocks done, blocks in all)``.

    Raises:
        GeossclError: bad input, before anything is written.

    An xarray ``DataArray`` or ``Dataset`` (read as :func:`segment` reads one; no dimension besides bands, y and x)
    is written to a temporary GeoTIFF beside ``out`` a strip at a time (a dask array is computed so), then
    segmented as that file: memory stays flat with its size.
    """
    if is_xarray(scene):
        options = {k: v for k, v in locals().items() if k not in ("scene", "model", "out")}  # every argument, as given
        return _predict_xarray(scene, model, out, **options)
    outputs = [o for o in (out, probabilities, vector, preview) if o is not None]
    if len({os.path.abspath(o) for o in outputs}) < len(outputs):
        raise GeossclError(f"{out}: the class map, probabilities, vector and preview outputs need different file names")
    check_suffix(out, (".tif", ".tiff"), "the class map is a Cloud-Optimised GeoTIFF")
    check_suffix(probabilities, (".tif", ".tiff"), "probabilities are a Cloud-Optimised GeoTIFF")
    check_suffix(vector, (".gpkg",), "polygons are a GeoPackage layer (ogr2ogr converts it)")
    check_suffix(preview, (".png",), "the preview is a PNG")
    read = scene.paths if isinstance(scene, Mosaic) else [scene] if isinstance(scene, str | os.PathLike) else list(scene)
    inputs = [*read, model if isinstance(model, str | os.PathLike) else None]
    for path in outputs:
        check_output(path, overwrite, inputs)
    network, info = _model(model)
    mosaic = scene if isinstance(scene, Mosaic) else open_scene(scene, info, bands, resample, nodata=nodata)
    engine = TiledSegmenter(network, info, device=device, tile_size=tile_size, overlap=overlap, batch_size=batch_size,
                            block_size=block_size, precision=precision)
    area = mosaic.snap(_extent(mosaic))
    width, height, transform = _grid(mosaic, area)
    # Sparse only where the files lie far apart: most readers that are not GDAL cannot read a block left out.
    sparse = {"SPARSE_OK": "TRUE"} if _scattered(mosaic, area, width, height) else {}
    options = {**COG_OPTIONS, **sparse, **{k.upper(): str(v) for k, v in (creation_options or {}).items()}}
    names = info.class_names
    tags = {"class_names": json.dumps(names), "geosscl_model": json.dumps({"arch": info.arch, "encoder": info.encoder})}
    if info.class_values is not None:
        tags["class_values"] = json.dumps(info.class_values)  # the value of each class of class_names in the map
    names_by_value, colors_by_value = info.by_value()

    with contextlib.ExitStack() as stack:
        # GDAL's block cache defaults to 5 % of RAM and fills while the COG is built:
        # bound it, so memory stays flat with scene size.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        final = stack.enter_context(atomic_output(out, overwrite))
        final_probs = stack.enter_context(atomic_output(probabilities, overwrite)) if probabilities else None
        final_vector = stack.enter_context(atomic_output(vector, overwrite)) if vector else None
        final_preview = stack.enter_context(atomic_output(preview, overwrite)) if preview else None
        folder = os.path.dirname(final)
        staged = stack.enter_context(_scratch(folder, ".classes.tif"))
        # Sparse: blocks never written (no file reaches them) and blocks of nodata alone take no space, so the
        # staged map of scattered files is as large on disk as the files, not as their extent.
        profile = dict(driver="GTiff", width=width, height=height, crs=mosaic.crs, transform=transform, tiled=True,
                       blockxsize=512, blockysize=512, compress="DEFLATE", BIGTIFF="IF_SAFER", SPARSE_OK="TRUE")
        classes_out = stack.enter_context(rasterio.open(staged, "w", count=1, dtype="uint8", nodata=NODATA_CLASS, **profile))
        probs_out = None
        if final_probs:
            staged_probs = stack.enter_context(_scratch(folder, ".probabilities.tif"))
            probs_out = stack.enter_context(rasterio.open(staged_probs, "w", count=info.num_classes, dtype="float32",
                                                          nodata=float("nan"), predictor=3, **profile))
        plan = engine.plan(mosaic, area)
        for done, block in enumerate(engine.blocks(mosaic, area, plan=plan), 1):
            window = _window(block.bounds, transform)
            classes_out.write(_to_uint8(block.classes, info), 1, window=window)
            if probs_out is not None:
                p = block.probabilities.numpy().astype(np.float32)
                p[:, block.classes.numpy() < 0] = np.nan
                probs_out.write(p, window=window)
            if progress:
                progress(done, len(plan))
        classes_out.write_colormap(1, {v: tuple(c) + (255,) for v, c in colors_by_value.items()})
        classes_out.update_tags(**tags)
        classes_out.set_band_description(1, "class")
        classes_out.close()
        rasterio.shutil.copy(staged, final, driver="COG", **options)
        # GDAL-based GIS (QGIS's paletted renderer, gdalinfo) name the classes from these.
        write_category_names(final, [names_by_value.get(v, "") for v in range(max(names_by_value) + 1)])
        if probs_out is not None:
            for i, name in enumerate(names, 1):
                probs_out.set_band_description(i, name)
            probs_out.update_tags(**tags)
            probs_out.close()
            rasterio.shutil.copy(staged_probs, final_probs,  driver="COG",
                                 **{**options, "OVERVIEW_RESAMPLING": "AVERAGE", "PREDICTOR": "FLOATING_POINT"})
        if final_vector:
            background = info.map_values[info.class_names.index(info.background_class)] if info.background_class else None
            write_polygons(final, final_vector, names_by_value, simplify,
                           windows=[_window(bounds, transform) for bounds in plan], leave_out=background)
        if final_preview:
            from .preview import plot_class_map

            plot_class_map(mosaic, final, final_preview, names_by_value, colors_by_value, rgb=preview_rgb)
    return os.fspath(out)


#: Names of the outputs :func:`predict_each` writes for a scene file ``STEM.tif``.
EACH_NAMES = {"out": "{}_classes.tif", "probabilities": "{}_probabilities.tif", "vector": "{}_classes.gpkg",
              "preview": "{}_classes.png"}


def predict_each(
    scenes: str | os.PathLike | Iterable[str | os.PathLike],
    model: Model,
    out: str | os.PathLike,
    *,
    probabilities: str | os.PathLike | None = None,
    vector: str | os.PathLike | None = None,
    preview: str | os.PathLike | None = None,
    bands: list[int] | None = None,
    resample: bool = True,
    overwrite: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> list[str]:
    """Segment every scene of ``scenes`` on its own, in its own grid and CRS: one class map per scene
    (tiles of a survey, scenes of several dates or UTM zones), the model loaded once.

    A scene is a raster file, or the per-band files of one acquisition, named after their
    bands (``X_B1.TIF``, ``X_B2.TIF``, …), stacked as a :class:`~geosscl.data.Mosaic`
    stacks them (:func:`~geosscl.data.mosaic.acquisitions`).
    ``out`` (and ``probabilities``, ``vector``, ``preview`` if given) are folders, created
    if needed; a file ``STEM.tif`` gives ``STEM_classes.tif`` (``STEM_probabilities.tif``,
    ``STEM_classes.gpkg``, ``STEM_classes.png``), per-band files ``STEM_B1.TIF``, …
    ``STEM_classes.tif``. A scene whose outputs all exist is skipped unless ``overwrite``:
    outputs are only ever complete (see :func:`predict`), so a batch that was stopped goes
    on where it stopped. Every scene is opened and checked against the model before
    anything is written. ``options`` are :func:`predict`'s.

    Returns:
        the class maps, one per scene, in the order of their first files.

    Raises:
        GeossclError: bad input (a file the model cannot read, two files of one name, an
            output folder that is a file), before anything is written.
    """
    files = find_rasters(scenes)
    network, info = _model(model)
    folders = {"out": out, "probabilities": probabilities, "vector": vector, "preview": preview}
    folders = {key: os.fspath(folder) for key, folder in folders.items() if folder is not None}
    searched = [os.path.abspath(s) for s in ([scenes] if isinstance(scenes, str | os.PathLike) else scenes)
                if os.path.isdir(s)]
    for folder in folders.values():
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise GeossclError(f"{folder}: is a file; one output per scene file needs a folder here")
        inside = [s for s in searched if os.path.commonpath([s, os.path.abspath(folder)]) == s]
        if inside:
            # The next run over that folder would take the class maps for scenes.
            raise GeossclError(f"{folder}: is inside {inside[0]}, which is searched for scenes; write the outputs elsewhere")
    stems: dict[str, list[str]] = {}
    for place in _scenes(files):
        stem = _scene_stem(place)
        if stem in stems:
            raise GeossclError(f"{place[0]}: {stems[stem][0]} has the same name; their outputs would be one file "
                               f"({EACH_NAMES['out'].format(stem)})")
        stems[stem] = place
    jobs = [(place, {key: os.path.join(folder, EACH_NAMES[key].format(stem)) for key, folder in folders.items()})
            for stem, place in stems.items()]
    written = {os.path.abspath(o) for _, outputs in jobs for o in outputs.values()}
    clash = sorted(written & {os.path.abspath(f) for f in files})
    if clash:
        raise GeossclError(f"{clash[0]}: is a scene and would be an output; choose other output folders")
    if not overwrite:
        for _, outputs in jobs:
            present = [o for o in outputs.values() if os.path.exists(o)]
            if present and len(present) < len(outputs):
                raise GeossclError(f"{present[0]}: already exists, without the scene's other outputs; pass --overwrite "
                                   "to remake it with them")
    mosaics = [open_scene(place, info, bands, resample, nodata=options.get("nodata")) for place, _ in jobs]  # every check before any write
    check_precision(options.get("precision", "32"), resolve_device(options.get("device", "auto")))
    for folder in folders.values():
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise GeossclError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    made = []
    for done, ((place, outputs), mosaic) in enumerate(zip(jobs, mosaics), 1):
        if not overwrite and all(os.path.exists(o) for o in outputs.values()):
            log.info(f"{place[0]}: skipped, its outputs exist")
        else:
            predict(mosaic, (network, info), overwrite=overwrite, **options, **outputs)
        made.append(outputs["out"])
        if progress:
            progress(done, len(jobs))
    return made


def _scenes(files: list[str]) -> list[list[str]]:
    """The scenes of :func:`predict_each`: single-band files whose names say they are bands of one acquisition
    (each names its band, ``X_B1.TIF``, …; or all name one date, ``S1_20200101_VV.tif``, ``S1_20200101_VH.tif``)
    stacked, every other file alone (``pan_a.tif``, ``pan_b.tif`` on one grid are two scenes, not two bands)."""
    scenes = []
    for place in places_of(files):
        scenes += [place] if len(place) > 1 and named_as_bands(place) else [[f] for f in place]
    return scenes


def _scene_stem(files: list[str]) -> str:
    """The name of a scene's outputs: its file's stem, or for per-band files the first's without its band."""
    stem = os.path.splitext(os.path.basename(files[0]))[0]
    if len(files) == 1:
        return stem
    return re.sub(r"([_.-])[_.-]+", r"\1", BAND_IN_NAME.sub("", stem)).strip("_.- ") or stem


def write_polygons(class_map: str, out: str, names: dict[int, str], simplify: float = 1.0, rows: int = 1024,
                   windows: list[Window] | None = None, leave_out: int | None = None) -> int:
    """Polygons of the connected class regions of a class map, as a GeoPackage layer ``classes``
    (``class_id``: the value in the map; ``class_name``: its name in ``names``, by value).
    ``leave_out``: a value with no polygons (a model's background class: the ground between
    the buildings would be one polygon with a hole for each, as large as the map).

    The map is read in strips of ``rows`` lines; the pieces of a region cut by a strip
    edge are merged again. ``windows``: where the map was written (default: everywhere);
    each strip then reads only the runs of columns that some window of it covers, so a
    map of scattered files is not read across the ground between them. Returns the
    number of polygons.
    """
    import geopandas as gpd
    import rasterio.features
    import shapely

    pieces: dict[int, list[Any]] = {}
    with rasterio.open(class_map) as src:
        crs, res = src.crs, abs(src.transform.a)
        for top in range(0, src.height, rows):
            height = min(rows, src.height - top)
            for left, right in _column_runs(windows, top, height, src.width):
                window = Window(left, top, right - left, height)
                data = src.read(1, window=window)
                mask = data != NODATA_CLASS
                if leave_out is not None:
                    mask &= data != leave_out
                shapes = rasterio.features.shapes(data, mask=mask, transform=src.window_transform(window))
                for geometry, value in shapes:
                    pieces.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    ids, geometries = [], []
    for value in sorted(pieces):
        merged = shapely.union_all(pieces[value], grid_size=None)
        parts = shapely.get_parts(merged)
        ids += [value] * len(parts)
        geometries += list(parts)
    if simplify > 0 and geometries:
        # Plain simplification moves shared edges differently on each side and opens
        # gaps; coverage simplification moves each shared edge once.
        geometries = list(shapely.coverage_simplify(np.array(geometries, dtype=object), simplify * res,
                                                    simplify_boundary=False))
    frame = gpd.GeoDataFrame(
        {"class_id": np.array(ids, dtype=np.int32), "class_name": [names.get(i, str(i)) for i in ids]},
        geometry=geometries, crs=crs,
    )
    os.remove(out)  # atomic_output's placeholder: the GeoPackage driver wants to create the file itself
    frame.to_file(out, layer="classes", driver="GPKG")
    return len(frame)


def _column_runs(windows: list[Window] | None, top: int, height: int, width: int) -> list[tuple[int, int]]:
    """``(left, right)`` column ranges, merged where they touch, of ``windows`` that reach rows ``top`` …
    ``top + height``; all ``width`` columns where ``windows`` is None."""
    if windows is None:
        return [(0, width)]
    spans = sorted((int(w.col_off), int(w.col_off + w.width)) for w in windows
                   if w.row_off < top + height and w.row_off + w.height > top)
    runs: list[tuple[int, int]] = []
    for left, right in spans:
        if runs and left <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], right))
        else:
            runs.append((left, right))
    return runs


@contextlib.contextmanager
def _scratch(folder: str, suffix: str) -> Iterator[str]:
    """A temporary file name in ``folder`` (next to the output: same disk, no large copy), removed at the end."""
    fd, path = tempfile.mkstemp(prefix=".geosscl-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _grid(mosaic: Mosaic, area: tuple[float, float, float, float]) -> tuple[int, int, Affine]:
    rx, ry = mosaic.res
    width, height = round((area[2] - area[0]) / rx), round((area[3] - area[1]) / ry)
    return width, height, Affine(rx, 0.0, area[0], 0.0, -ry, area[3])


def _window(bounds: tuple[float, float, float, float], transform: Affine) -> Window:
    col = round((bounds[0] - transform.c) / transform.a)
    row = round((bounds[3] - transform.f) / transform.e)
    width = round((bounds[2] - bounds[0]) / transform.a)
    height = round((bounds[1] - bounds[3]) / transform.e)
    return Window(col, row, width, height)


def _to_uint8(classes: Any, info: ModelInfo) -> np.ndarray:
    """Class ids (-1: no input) as the map's values: each class's value, NODATA_CLASS for no input."""
    array = classes.numpy() if hasattr(classes, "numpy") else np.asarray(classes)
    values = np.array(info.map_values + [NODATA_CLASS], dtype=np.uint8)
    return values[np.where(array < 0, len(values) - 1, array)]
