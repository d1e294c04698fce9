"""xarray in and out of ``geosscl.segment``: a DataArray or Dataset is segmented as the files it came from, and the
class map comes back as a DataArray on its very coordinates.

Real data: the NC Landsat 7 band files opened with rioxarray (the reader users have), and the bundled NC land-use
model. Coordinates at pixel corners with ``crs``/``transform`` attributes (as stackstac writes them), and a CF grid
mapping without WKT, are built by hand around the same real pixels.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import rasterio
import xarray as xr

rioxarray = pytest.importorskip("rioxarray")

import geosscl  # noqa: E402
from geosscl import GeossclError  # noqa: E402
from geosscl.prediction import predict, segment  # noqa: E402
from conftest import BUNDLED_MODEL, NC_BANDS  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return geosscl.load_model(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def scene():
    """The NC bands as users open them: one rioxarray DataArray per file (nodata masked as NaN), stacked."""
    return xr.concat([rioxarray.open_rasterio(p, masked=True) for p in NC_BANDS], dim="band").rename("nc")


@pytest.fixture(scope="module")
def reference(model):
    """The class map of the band files themselves."""
    return segment([str(p) for p in NC_BANDS], model, device="cpu")


def test_a_dataarray_is_segmented_as_its_files_on_its_own_coordinates(model, scene, reference, tmp_path):
    classes, profile = reference
    out = geosscl.segment(scene, model, device="cpu")
    assert isinstance(out, xr.DataArray) and out.dims == ("y", "x") and out.dtype == np.uint8
    np.testing.assert_array_equal(out.values, classes)
    assert 0 < (classes == 255).sum() < classes.size  # the scene's nodata corners are off the map
    # Its coordinates are the scene's values, so xarray aligns the two without a pixel lost.
    aligned, _ = xr.align(out, scene, join="exact")
    assert aligned.shape == classes.shape
    # rioxarray reads its georeferencing; written with it, it is the map predict writes.
    assert out.rio.crs == profile["crs"] and out.rio.transform() == profile["transform"] and out.rio.nodata == 255
    out.rio.to_raster(tmp_path / "rio.tif")
    predict([str(p) for p in NC_BANDS], model, tmp_path / "predict.tif", device="cpu")
    with rasterio.open(tmp_path / "rio.tif") as a, rasterio.open(tmp_path / "predict.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.transform == b.transform and a.crs == b.crs
    # The classes are named the CF way.
    info = model[1]
    assert list(out.attrs["flag_values"]) == info.map_values
    assert out.attrs["flag_meanings"].split() == info.class_names
    assert out.attrs["flag_colors"].split()[0] == "#{:02x}{:02x}{:02x}".format(*info.class_colors[0])


def test_a_window_a_south_up_array_and_a_dataset(model, scene, reference, tmp_path):
    classes, _ = reference
    # A window: rioxarray's GeoTransform of the whole scene is kept stale by isel; the coordinates place it.
    window = scene.isel(x=slice(100, 300), y=slice(50, 250))
    assert window.spatial_ref.attrs["GeoTransform"] == scene.spatial_ref.attrs["GeoTransform"]
    out = geosscl.segment(window, model, device="cpu")
    # It is segmented as the window cut from the files is (files read with bounds see past them: not the same).
    cut = rasterio.windows.Window(100, 50, 200, 200)
    for path in NC_BANDS:
        with rasterio.open(path) as src:
            profile = {**src.profile, "width": 200, "height": 200, "transform": src.window_transform(cut)}
            with rasterio.open(tmp_path / path.name, "w", **profile) as dst:
                dst.write(src.read(window=cut))
    expected, _ = segment(sorted(str(p) for p in tmp_path.glob("*.tif")), model, device="cpu")
    np.testing.assert_array_equal(out.values, expected)
    np.testing.assert_array_equal(out.x.values, window.x.values)
    np.testing.assert_array_equal(out.y.values, window.y.values)
    # South up (y ascending, as many netCDF grids): the same map, in the array's order.
    flipped = scene.isel(y=slice(None, None, -1))
    out = geosscl.segment(flipped, model, device="cpu")
    np.testing.assert_array_equal(out.values, classes[::-1])
    np.testing.assert_array_equal(out.y.values, flipped.y.values)
    assert out.rio.transform().e > 0
    # A Dataset of one variable per band (odc-stac's form) is the same scene.
    dataset = scene.assign_coords(band=[f"b{i}" for i in range(1, 7)]).to_dataset(dim="band")
    np.testing.assert_array_equal(geosscl.segment(dataset, model, device="cpu").values, classes)


def test_predict_writes_a_dataarray_s_class_map_as_it_writes_its_files(model, scene, tmp_path):
    """For arrays larger than memory: the DataArray goes to a temporary GeoTIFF beside the output, gone after."""
    files = predict([str(p) for p in NC_BANDS], model, tmp_path / "files.tif", device="cpu")
    out = predict(scene, model, tmp_path / "array.tif", vector=tmp_path / "array.gpkg", device="cpu")
    with rasterio.open(files) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
        assert a.profile == b.profile and a.tags() == b.tags() and a.colormap(1) == b.colormap(1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["array.gpkg", "array.tif", "array.tif.aux.xml", "files.tif",
                                                          "files.tif.aux.xml"]  # the sidecars: category names
    with pytest.raises(GeossclError, match=r"array\.tif: already exists"):
        predict(scene, model, tmp_path / "array.tif")
    series = xr.concat([scene, scene], dim="time")
    with pytest.raises(GeossclError, match=r"^DataArray 'nc': 2 entries along 'time'; predict writes one map"):
        predict(series, model, tmp_path / "series.tif")
    assert not (tmp_path / "series.tif").exists()


def test_a_lazy_dask_array_is_read_a_strip_at_a_time(model, reference, monkeypatch):
    """stackstac and ``open_rasterio(chunks=…)`` give dask arrays: segmented as the same pixels, computed by strips."""
    pytest.importorskip("dask")
    import geosscl.dataarrays

    lazy = xr.concat([rioxarray.open_rasterio(p, masked=True, chunks={"x": 128, "y": 128}) for p in NC_BANDS], "band")
    assert lazy.chunks is not None
    monkeypatch.setattr(geosscl.dataarrays, "STRIP_ROWS", 100)
    out = geosscl.segment(lazy.rename("lazy"), model, device="cpu")
    np.testing.assert_array_equal(out.values, reference[0])


def test_corner_coordinates_and_a_cf_grid_mapping(model, scene, reference):
    """stackstac puts coordinates at pixel corners and keeps ``crs`` and ``transform`` as attributes."""
    classes, profile = reference
    transform = profile["transform"]
    corners = xr.DataArray(scene.values, dims=("band", "y", "x"), attrs={
        "crs": profile["crs"].to_wkt(), "transform": tuple(transform)[:6], "resolution": transform.a},
        coords={"band": [f"b{i}" for i in range(1, 7)],
                "x": transform.c + np.arange(scene.sizes["x"]) * transform.a,
                "y": transform.f + np.arange(scene.sizes["y"]) * transform.e})
    out = geosscl.segment(corners, model, device="cpu")
    np.testing.assert_array_equal(out.values, classes)
    np.testing.assert_array_equal(out.x.values, corners.x.values)
    # The map's coordinates are corners too (so that it aligns with its imagery); its GeoTransform says where.
    assert rasterio.Affine.from_gdal(*map(float, out.spatial_ref.attrs["GeoTransform"].split())) == transform
    # CF grid-mapping parameters alone (no WKT): pyproj makes the CRS of them.
    cf = scene.drop_vars("spatial_ref").assign_coords(spatial_ref=xr.DataArray(0, attrs=_cf(profile["crs"])))
    cf.attrs["grid_mapping"] = "spatial_ref"
    np.testing.assert_array_equal(geosscl.segment(cf, model, device="cpu").values, classes)


def test_a_cf_dataset_with_its_grid_mapping_variable(model, scene, reference):
    """A CF-netCDF's bands name a grid-mapping variable (here Lambert conformal conic parameters, no WKT), which
    xarray keeps a data variable unless the file is opened with decode_coords="all"."""
    crs = reference[1]["crs"]
    raw = xr.Dataset({f"b{i}": (("y", "x"), scene.values[i - 1], {"grid_mapping": "lambert_conformal_conic"})
                      for i in range(1, 7)}, coords={"x": scene.x.values, "y": scene.y.values})
    raw["lambert_conformal_conic"] = xr.DataArray(np.int32(0), attrs=_cf(crs))
    assert "crs_wkt" not in raw["lambert_conformal_conic"].attrs
    for decoded in (xr.decode_cf(raw), xr.decode_cf(raw, decode_coords="all")):
        np.testing.assert_array_equal(geosscl.segment(decoded, model, device="cpu").values, reference[0])
    with pytest.raises(GeossclError, match=r"^DataArray 'b1': no CRS: its grid mapping 'lambert_conformal_conic' "
                                           r"is not among its coordinates; open the file with decode_coords='all'"):
        geosscl.segment(xr.decode_cf(raw)["b1"], model)


def _cf(crs) -> dict:
    from pyproj import CRS

    return {k: v for k, v in CRS.from_wkt(crs.to_wkt()).to_cf().items() if k != "crs_wkt"}  # parameters alone


def test_each_date_of_a_time_series_is_segmented(model, scene, reference):
    classes, _ = reference
    cloud = scene.where(scene.x < scene.x[200])  # the second date lost its east to a cloud mask
    series = xr.concat([scene, cloud], dim="time").assign_coords(time=np.array(["2000-05-10", "2000-05-26"],
                                                                               dtype="datetime64[ns]"))
    out = geosscl.segment(series, model, device="cpu")
    assert out.dims == ("time", "y", "x")
    np.testing.assert_array_equal(out.time.values, series.time.values)
    np.testing.assert_array_equal(out.isel(time=0).values, classes)
    assert (out.isel(time=1).values[:, 200:] == 255).all()
    assert (out.isel(time=1).values[:, :150] == classes[:, :150]).mean() > 0.99  # away from the cloud edge's tiles


def test_another_resolution_is_read_at_the_model_s_and_warned_about_by_name(model, scene, caplog):
    coarse = scene.coarsen(x=2, y=2, boundary="trim").mean()
    with caplog.at_level(logging.WARNING, logger="geosscl"):
        out = geosscl.segment(coarse, model, device="cpu")
    assert "DataArray 'nc': ground sampling distance 57 m differs from the model's 28.5 m" in caplog.text
    assert "geosscl-" not in caplog.text  # not the temporary file
    assert out.rio.resolution() == (28.5, -28.5)
    assert np.allclose(np.diff(out.x.values), 28.5)
    assert out.x.values[0] == pytest.approx(float(coarse.x[0]) - 28.5 / 2)  # the first centre of the model's grid


def test_what_cannot_be_segmented_is_named(model, scene):
    with pytest.raises(GeossclError, match=r"^DataArray 'nc': no CRS"):
        geosscl.segment(scene.drop_vars("spatial_ref"), model)
    bent = scene.assign_coords(x=scene.x.values + np.linspace(0, 50, scene.sizes["x"]) ** 2 / 50)
    with pytest.raises(GeossclError, match=r"coordinate 'x' is not evenly spaced"):
        geosscl.segment(bent, model)
    with pytest.raises(GeossclError, match=r"^DataArray 'nc': dimensions .* name no single y and x"):
        geosscl.segment(scene.rename(x="col"), model)
    cube = xr.concat([xr.concat([scene, scene], "time")] * 2, "member")
    with pytest.raises(GeossclError, match=r"takes one more \(each entry is segmented\); select along 'time'"):
        geosscl.segment(cube, model)
    dataset = scene.assign_coords(band=[f"b{i}" for i in range(1, 7)]).to_dataset(dim="band")
    dataset["b1"].attrs["nodata"] = 0
    with pytest.raises(GeossclError, match=r"^Dataset: the variables declare different no-data values \(0.0, none\); "
                                           "pass one as nodata="):
        geosscl.segment(dataset, model)
    assert geosscl.segment(dataset, model, nodata=-1).shape == scene.shape[1:]
    # Checks made on files name the DataArray, not the temporary file they read.
    with pytest.raises(GeossclError) as error:
        geosscl.segment(scene.isel(band=slice(0, 4)), model)
    assert str(error.value).startswith("DataArray 'nc': ") and "4 band" in str(error.value)
    assert "geosscl-" not in str(error.value)
