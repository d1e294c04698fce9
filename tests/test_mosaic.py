"""geosscl.data.Mosaic on the bundled real rasters, and synthetic edge cases."""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from torch.utils.data import DataLoader
from torchgeo.datasets import stack_samples
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

from geosscl import GeossclError, Mosaic
from conftest import NAIP, NAIP_4326, NC_BANDS, SAMPLES, TUTORIAL_2002, TUTORIAL_STACK, write_raster


def test_aligned_read_equals_rasterio_window():
    mosaic = Mosaic(NAIP)
    with rasterio.open(NAIP) as src:
        expected = src.read(window=Window(100, 50, 128, 96)).astype(np.float32)
        t = src.transform
    minx, maxy = t.c + 100 * t.a, t.f + 50 * t.e
    sample = mosaic[minx : minx + 128 * 5 : 5, maxy - 96 * 5 : maxy : 5]
    image = sample["image"].numpy()
    assert image.shape == (4, 96, 128)
    expected[expected == 0] = np.nan  # NAIP nodata is 0
    np.testing.assert_array_equal(image, expected)
    assert sample["crs"] == mosaic.crs


@pytest.mark.parametrize("path", [NAIP, NAIP_4326, NC_BANDS[0], TUTORIAL_STACK, SAMPLES / "nc_landsat" / "strata.tif"])
def test_a_header_kept_is_what_rasterio_reads(path):
    from geosscl.data.files import raster_header

    header = raster_header(str(path))
    with rasterio.open(path) as src:
        for name in ("crs", "transform", "width", "height", "count", "bounds"):
            assert getattr(header, name) == getattr(src, name), name
        assert header.dtypes == src.dtypes and header.nodatavals == src.nodatavals
        assert header.descriptions == src.descriptions and header.colorinterp == tuple(src.colorinterp)
        assert header.mask_flag_enums == tuple(tuple(f) for f in src.mask_flag_enums)


def test_south_up_bounds_are_rasterio_s(tmp_path):
    from geosscl.data.files import raster_header

    path = write_raster(tmp_path / "south_up.tif", np.ones((1, 4, 5), np.uint8),
                        transform=rasterio.transform.Affine(30, 0, 500_000, 0, 30, 4_000_000))
    with rasterio.open(path) as src:
        assert raster_header(str(path)).bounds == src.bounds and src.bounds.bottom > src.bounds.top


def test_more_files_than_handles_kept_are_each_opened_once(tmp_path, monkeypatch):
    """Indexing looks at every file's header several times; with more files than the handles a process keeps
    open, each look reopened every file (7 opens per file). The tiles of a real scene read as the scene."""
    from geosscl.data import files

    with rasterio.open(NAIP) as src:
        profile, transform = src.profile, src.transform
        for row in range(0, 96, 32):
            for col in range(0, 128, 32):
                window = Window(col, row, 32, 32)
                write_raster(tmp_path / f"tile_{row:03d}_{col:03d}.tif", src.read(window=window), crs=src.crs,
                             transform=src.window_transform(window), nodata=profile["nodata"])
    monkeypatch.setattr(files, "_MAX_OPEN", 4)  # 12 tiles: three times the handles kept, from none open
    monkeypatch.setattr(files._local, "pid", os.getpid(), raising=False)
    monkeypatch.setattr(files._local, "handles", OrderedDict(), raising=False)
    # and three times the headers the process keeps: indexing keeps them all while it runs
    monkeypatch.setattr(files, "_header", functools.lru_cache(maxsize=4)(files._header.__wrapped__))
    opened = []
    real_open = rasterio.open
    monkeypatch.setattr(files.rasterio, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    mosaic = Mosaic(tmp_path)
    assert len(mosaic.files) == 12 and set(opened) == set(mosaic.files)
    # Once each, and the first again to read the band GDAL calls alpha (NAIP's near infrared: data, not a mask).
    assert len(opened) == 13 and opened.count(mosaic.files[0]) == 2 and mosaic.num_bands == 4
    x0, y1 = transform.c, transform.f
    whole = Mosaic(NAIP)[x0:x0 + 128 * 5:5, y1 - 96 * 5:y1:5]["image"]
    tiled = mosaic[x0:x0 + 128 * 5:5, y1 - 96 * 5:y1:5]["image"]
    torch.testing.assert_close(tiled, whole, equal_nan=True, rtol=0, atol=0)

    # Statistics of tiles smaller than their windows (128 px): drawn in windows of a tile's side (32 px),
    # where TorchGeo's sampler found no place to draw and failed. 64 windows on the 12 tiles of the
    # scene: the means lie within the tiles' range.
    from geosscl.data.stats import _largest_fit_px, band_statistics

    assert _largest_fit_px(mosaic) == 32
    mean, std = band_statistics(mosaic)
    tiles = whole.reshape(4, 3, 32, 4, 32).permute(0, 1, 3, 2, 4).reshape(4, 12, -1).numpy()
    tile_means = np.nanmean(tiles, axis=2)
    assert (tile_means.min(axis=1) <= mean).all() and (mean <= tile_means.max(axis=1)).all()
    assert (np.asarray(std) > 0).all()
    # TorchGeo draws each window's tile from torch's global generator, not the one it is given: the
    # statistics repeat whatever drew from it before (they did not), and another seed draws other tiles.
    torch.rand(1000)
    assert band_statistics(mosaic) == (mean, std)
    torch.manual_seed(12345)
    assert band_statistics(mosaic) == (mean, std)
    assert band_statistics(mosaic, seed=1)[0] != mean


def test_sidecars_are_found_without_listing_the_folder(tmp_path, monkeypatch):
    """GDAL lists a file's folder at every open unless told not to; in a folder of many tiles (or on a network
    file system) that costs more than the open itself, so geosscl opens files with GDAL_DISABLE_READDIR_ON_OPEN=
    TRUE. GDAL then looks for each sidecar by name: a georeferencing world file, the CRS and nodata of a PAM
    .aux.xml and external overviews are all still read."""
    from geosscl.data import files

    with rasterio.open(NAIP) as src:
        window = Window(0, 0, 256, 256)
        data, transform, crs = src.read(window=window), src.window_transform(window), src.crs
    plain = tmp_path / "tile.tif"  # no georeferencing of its own
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(plain, "w", driver="GTiff", width=256, height=256, count=4, dtype="uint8") as dst:
            dst.write(data)
        with rasterio.Env(TIFF_USE_OVR=True), rasterio.open(plain, "r+") as dst:
            dst.build_overviews([2, 4])
    assert (tmp_path / "tile.tif.ovr").exists()
    (tmp_path / "tile.tfw").write_text("\n".join(map(str, (transform.a, 0, 0, transform.e, transform.c + transform.a / 2,
                                                            transform.f + transform.e / 2))))
    bands = "".join(f'<PAMRasterBand band="{b}"><NoDataValue>0</NoDataValue></PAMRasterBand>' for b in range(1, 5))
    (tmp_path / "tile.tif.aux.xml").write_text(f"<PAMDataset><SRS>{crs.to_wkt()}</SRS>{bands}</PAMDataset>")

    config = []
    real_open = rasterio.open
    monkeypatch.setattr(files.rasterio, "open", lambda *a, **k: config.append(
        rasterio.env.getenv().get("GDAL_DISABLE_READDIR_ON_OPEN") if rasterio.env.hasenv() else None)
        or real_open(*a, **k))
    files._header.cache_clear()
    monkeypatch.delenv("GDAL_DISABLE_READDIR_ON_OPEN", raising=False)
    mosaic = Mosaic(tmp_path)
    assert config and set(config) == {"TRUE"}
    assert mosaic.crs == crs and mosaic.nodata_values == {0.0}
    header = files.raster_header(str(plain))
    assert header.transform.almost_equals(transform) and header.nodatavals == (0.0,) * 4
    assert files.open_raster(str(plain)).overviews(1) == [2, 4]
    x0, y1 = transform.c, transform.f
    torch.testing.assert_close(mosaic[x0:x0 + 1280:5, y1 - 1280:y1:5]["image"],
                               Mosaic(NAIP, nodata=0)[x0:x0 + 1280:5, y1 - 1280:y1:5]["image"], equal_nan=True)

    # A user's own setting stands.
    config.clear()
    files._header.cache_clear()
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "FALSE")
    monkeypatch.setattr(files._local, "handles", OrderedDict(), raising=False)
    Mosaic(tmp_path)
    assert config and set(config) == {None}
    # ... in a rasterio.Env of the user's too.
    config.clear()
    files._header.cache_clear()
    monkeypatch.delenv("GDAL_DISABLE_READDIR_ON_OPEN")
    monkeypatch.setattr(files._local, "handles", OrderedDict(), raising=False)
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="FALSE"):
        Mosaic(tmp_path)
    assert config and set(config) == {"FALSE"}


def test_reading_many_headers_logs_its_progress(monkeypatch, caplog):
    """Indexing tens of thousands of files takes minutes: past HEADERS_QUIET_S of reading headers, their count
    is logged every HEADERS_EVERY_S (both 0 here, so every file after the first is reported)."""
    from geosscl.data import files, mosaic

    files._header.cache_clear()
    with caplog.at_level("INFO", logger="geosscl"):
        Mosaic(NC_BANDS)
    assert not [r for r in caplog.records if "headers read" in r.getMessage()]  # a quick read says nothing

    files._header.cache_clear()
    monkeypatch.setattr(mosaic, "HEADERS_QUIET_S", 0.0)
    monkeypatch.setattr(mosaic, "HEADERS_EVERY_S", 0.0)
    with caplog.at_level("INFO", logger="geosscl"):
        Mosaic(NC_BANDS)
    lines = [r.getMessage() for r in caplog.records if "headers read" in r.getMessage()]
    assert len(lines) == len(NC_BANDS) - 1 == 5
    assert lines[0].startswith(f"{NC_BANDS[0]} (+5 more): 1 of 6 file headers read, about ")
    assert lines[-1].startswith(f"{NC_BANDS[0]} (+5 more): 5 of 6 file headers read, about ")


def test_query_at_coarser_res_is_resampled():
    mosaic = Mosaic(NAIP)
    x, y, _ = mosaic.bounds
    sample = mosaic[x.start : x.start + 1000 : 10, y.stop - 500 : y.stop : 10]
    assert sample["image"].shape == (4, 50, 100)
    fine = mosaic[x.start : x.start + 1000 : 5, y.stop - 500 : y.stop : 5]["image"]
    # Bilinear 2x downsampling lands between the fine pixels: close to their mean.
    coarse_from_fine = fine.reshape(4, 50, 2, 100, 2).mean(dim=(2, 4))
    assert torch.nanmean((sample["image"] - coarse_from_fine).abs()) < 6


def test_torchgeo_sampler_dataloader_and_stack_samples():
    mosaic = Mosaic(NAIP, bands=[4, 1])
    sampler = RandomGeoSampler(mosaic, size=64, length=8, generator=torch.Generator().manual_seed(0))
    batch = next(iter(DataLoader(mosaic, sampler=sampler, batch_size=4, collate_fn=stack_samples)))
    assert batch["image"].shape == (4, 2, 64, 64)
    assert batch["image"].dtype == torch.float32
    # Band order follows `bands`: channel 0 is NIR (band 4).
    with rasterio.open(NAIP) as src:
        nir_mean, red_mean = src.read(4).mean(), src.read(1).mean()
    assert nir_mean != red_mean
    grid = list(GridGeoSampler(mosaic, size=256, stride=256))
    assert len(grid) == len(list(GridGeoSampler(mosaic, size=256, stride=256)))
    assert all(mosaic[q]["image"].shape[-2:] == (256, 256) for q in grid[:3])


def test_intersection_with_another_mosaic_stacks_channels():
    rgb = Mosaic(NAIP, bands=[1, 2, 3])
    nir = Mosaic(NAIP, bands=[4])
    both = rgb & nir
    x, y, _ = both.bounds
    sample = both[x.start : x.start + 320 : 5, y.start : y.start + 320 : 5]
    assert sample["image"].shape == (4, 64, 64)
    direct = Mosaic(NAIP)[x.start : x.start + 320 : 5, y.start : y.start + 320 : 5]["image"]
    torch.testing.assert_close(sample["image"], direct, equal_nan=True)


def test_single_band_files_stack_with_their_own_nodata():
    mosaic = Mosaic(NC_BANDS)
    assert mosaic.num_bands == 6
    image, _, complete = mosaic.read(tuple(mosaic.index.total_bounds))
    assert not complete
    assert image.shape == (6, 443, 489)
    for band, path in enumerate(NC_BANDS):
        with rasterio.open(path) as src:
            data = src.read(1).astype(np.float32)
            data[data == np.float32(src.nodata)] = np.nan
        np.testing.assert_array_equal(image[band], data)
    # The files hold nodata (-99999 in float32 bands, -32768 in int16 ones): it is NaN here.
    assert np.isnan(image).any()
    assert not (image == -99999).any() and not (image == -32768).any()


def test_band_selection_over_stacked_files():
    mosaic = Mosaic(NC_BANDS, bands=[6, 2])
    image = mosaic.read(tuple(mosaic.index.total_bounds))[0]
    with rasterio.open(NC_BANDS[5]) as b7, rasterio.open(NC_BANDS[1]) as b2:
        first, second = b7.read(1).astype(np.float32), b2.read(1).astype(np.float32)
        first[first == np.float32(b7.nodata)] = np.nan
        second[second == np.float32(b2.nodata)] = np.nan
    np.testing.assert_array_equal(image[0], first)
    np.testing.assert_array_equal(image[1], second)


def test_two_files_in_different_crs_read_as_one(naip_halves):
    left, right = naip_halves
    mosaic = Mosaic([left, right])  # mosaic CRS: the first file's (EPSG:26914)
    assert mosaic.crs.to_epsg() == 26914
    image = mosaic.read(tuple(Mosaic(NAIP).index.total_bounds))[0]
    with rasterio.open(NAIP) as src:
        original = src.read().astype(np.float32)
    half = original.shape[2] // 2
    # Left half: read straight from its file, exact.
    np.testing.assert_array_equal(np.nan_to_num(image[:, :, :half]), original[:, :, :half])
    # Right half: warped twice (to EPSG:3857 and back), so close, not equal.
    right_part = image[:, 10:-10, half + 10 : -10]
    truth = original[:, 10:-10, half + 10 : -10]
    valid = ~np.isnan(right_part)
    assert valid.mean() > 0.99
    error = np.abs(right_part[valid] - truth[valid]).mean()
    spread = np.abs(truth - truth.mean()).mean()
    assert error < 0.25 * spread, (error, spread)


def test_real_two_crs_mosaic_with_a_gap():
    mosaic = Mosaic([NAIP, NAIP_4326])
    assert len(mosaic.index) == 2
    xmin, ymin, xmax, ymax = mosaic.index.geometry.iloc[1].bounds
    # The EPSG:4326 file lands far away (Peru) in UTM 14N, but is read all the same.
    image = mosaic[xmin : xmin + 64 * 100 : 100, ymax - 64 * 100 : ymax : 100]["image"]
    assert image.shape == (4, 64, 64)
    assert np.isfinite(image.numpy()).mean() > 0.5


def test_crs_and_res_options():
    mosaic = Mosaic(NAIP, crs="EPSG:3857", res=10)
    assert mosaic.crs.to_epsg() == 3857
    assert mosaic.res == (10.0, 10.0)
    x, y, _ = mosaic.bounds
    cx, cy = (x.start + x.stop) / 2, (y.start + y.stop) / 2
    image = mosaic[cx - 640 : cx + 640, cy - 640 : cy + 640]["image"]
    assert image.shape == (4, 128, 128)
    assert np.isfinite(image.numpy()).all()


def test_internal_mask_is_nodata(tmp_path):
    data = np.full((2, 20, 30), 7, dtype=np.uint16)
    path = write_raster(tmp_path / "masked.tif", data)
    with rasterio.open(path, "r+") as dst:
        mask = np.full((20, 30), 255, dtype=np.uint8)
        mask[:, :10] = 0
        dst.write_mask(mask)
    image = Mosaic(path).read(tuple(Mosaic(path).index.total_bounds))[0]
    assert np.isnan(image[:, :, :10]).all()
    assert (image[:, :, 10:] == 7).all()


def test_an_alpha_band_masks_its_file_and_is_no_band(tmp_path):
    """Drone orthomosaics come as RGBA: the alpha band says where the image is. Read as a fourth band it became an
    input channel (mean 250: the mask itself), and the model then refused RGB files of the same ground."""
    with rasterio.open(NAIP) as src:
        rgb, profile = src.read([1, 2, 3]), src.profile
    alpha = np.full(rgb.shape[1:], 255, np.uint8)
    alpha[:40] = 0  # the edge outside the flight
    profile.update(count=4, photometric="RGB", alpha="YES", nodata=None)
    with rasterio.open(tmp_path / "ortho.tif", "w", **profile) as dst:
        dst.write(np.concatenate([rgb, alpha[None]]))
    profile.update(count=3, alpha="NO")
    with rasterio.open(tmp_path / "rgb.tif", "w", **profile) as dst:
        dst.write(rgb)
    ortho, plain = Mosaic(str(tmp_path / "ortho.tif")), Mosaic(str(tmp_path / "rgb.tif"))
    assert ortho.band_indexes == plain.band_indexes == [1, 2, 3]
    x, y, _ = ortho.bounds
    image = ortho.read((x.start, y.start, x.stop, y.stop))[0]
    expected = plain.read((x.start, y.start, x.stop, y.stop))[0]
    expected[:, :40] = np.nan
    np.testing.assert_array_equal(image, expected)
    assert Mosaic(str(tmp_path / "ortho.tif"), bands=[1, 2, 3, 4]).num_bands == 4  # still there when asked for
    # rasterio writes four byte bands as RGB + alpha unless told otherwise: NAIP's near infrared, so labelled, is data.
    with rasterio.open(NAIP) as src:
        data = src.read()
        data[3, :10] = 0  # dark water in the near infrared: as alpha, a hole
        rgbn = write_raster(tmp_path / "rgbn.tif", data, crs=src.crs, transform=src.transform)
    with rasterio.open(rgbn) as src:
        assert src.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    stacked = Mosaic(str(rgbn))
    assert stacked.band_indexes == [1, 2, 3, 4]
    image = stacked.read((x.start, y.start, x.stop, y.stop))[0]
    assert not np.isnan(image).any()  # no pixel masked by it
    np.testing.assert_array_equal(image, data)


def test_rgba_tiles_among_rgb_ones_are_the_same_bands(tmp_path):
    """Tiles reprojected with gdalwarp -dstalpha, or flights exported with and without alpha, make a mosaic of RGBA
    and RGB files: the same three bands, the alpha masking its tile. It was refused as 4 bands against 3. The NAIP
    tile's western half as RGBA (a strip outside the flight), its eastern half as RGB."""
    with rasterio.open(NAIP) as src:
        rgb, profile = src.read([1, 2, 3]), src.profile
        half = src.width // 2
        west_transform, east_transform = src.transform, src.window_transform(Window(half, 0, src.width - half, src.height))
    alpha = np.full((rgb.shape[1], half), 255, np.uint8)
    alpha[:, :30] = 0
    profile.update(count=4, width=half, photometric="RGB", alpha="YES", nodata=None, transform=west_transform)
    with rasterio.open(tmp_path / "a_west_rgba.tif", "w", **profile) as dst:
        dst.write(np.concatenate([rgb[:, :, :half], alpha[None]]))
    profile.update(count=3, width=rgb.shape[2] - half, alpha="NO", transform=east_transform)
    with rasterio.open(tmp_path / "b_east_rgb.tif", "w", **profile) as dst:
        dst.write(rgb[:, :, half:])
    tiles = [str(tmp_path / "a_west_rgba.tif"), str(tmp_path / "b_east_rgb.tif")]
    for order in (tiles, tiles[::-1]):
        mosaic = Mosaic(order)
        assert mosaic.band_indexes == [1, 2, 3] and len(mosaic.all_band_names) == 3
        x, y, _ = mosaic.bounds
        image = mosaic.read((x.start, y.start, x.stop, y.stop))[0]
        expected = rgb.astype(np.float32)
        expected[:, :, :30] = np.nan
        np.testing.assert_array_equal(image, expected)
        # What pretraining reads, from each tile on its own grid: the RGBA tile's alpha is its mask.
        west = mosaic.read_raw((x.start, y.start, x.start + 64 * mosaic.res[0], y.start + 64 * mosaic.res[1]))
        assert west.image.shape == (3, 64, 64) and not west.valid[:, :30].any() and west.valid[:, 30:].all()
    with pytest.raises(GeossclError, match=r"^bands: band 4 is the alpha band of .*a_west_rgba\.tif, which other files "
                                           r"of the mosaic lack; the mosaic has 3 band\(s\), numbered 1\.\.3$"):
        Mosaic(tiles, bands=[1, 2, 3, 4])
    assert Mosaic(tiles[:1], bands=[1, 2, 3, 4]).num_bands == 4  # on its own, the tile's alpha is still there if asked
    # A fourth band that is data is another band, alpha or not.
    with rasterio.open(NAIP) as src:
        rgbn = write_raster(tmp_path / "rgbn.tif", src.read(window=Window(0, 0, 64, 64)), crs=src.crs,
                            transform=src.window_transform(Window(0, 0, 64, 64)))
    with pytest.raises(GeossclError, match=r"rgbn\.tif: has 4 band\(s\) where .*west_rgba\.tif has 3 and an alpha "
                                           r"band; every place of a mosaic needs the same bands"):
        Mosaic([*tiles, str(rgbn)])


def test_first_file_wins_where_files_overlap(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.full((1, 10, 10), 1, dtype=np.int16), nodata=-1)
    shifted = rasterio.Affine(10.0, 0.0, 500050.0, 0.0, -10.0, 5000000.0)
    data_b = np.full((1, 10, 10), 2, dtype=np.int16)
    b = write_raster(tmp_path / "b.tif", data_b, transform=shifted, nodata=-1)
    mosaic = Mosaic([a, b])
    image = mosaic.read(tuple(mosaic.index.total_bounds))[0]
    assert image.shape == (1, 10, 15)
    assert (image[0, :, :10] == 1).all() and (image[0, :, 10:] == 2).all()
    # A nodata pixel of the first file is filled by the second.
    data_a = np.full((1, 10, 10), 1, dtype=np.int16)
    data_a[0, 0, 7] = -1
    write_raster(a, data_a, nodata=-1)
    image = Mosaic([a, b]).read(tuple(mosaic.index.total_bounds))[0]
    assert image[0, 0, 7] == 2 and image[0, 0, 4] == 1


def test_dates_of_one_place_overlap_and_a_read_can_take_any_of_them(tmp_path):
    """Two 8-band Landsat scenes of one grid (1999 and 2002) are two dates of one place, not 16 bands."""
    mosaic = Mosaic([TUTORIAL_STACK, TUTORIAL_2002])
    assert mosaic.num_bands == 8 and len(mosaic.index) == 2
    with rasterio.open(TUTORIAL_STACK) as old, rasterio.open(TUTORIAL_2002) as new:
        window = Window(40, 70, 64, 48)
        bounds = rasterio.windows.bounds(window, old.transform)
        first, later = old.read(window=window).astype(np.float32), new.read(window=window).astype(np.float32)
    assert not np.array_equal(first, later)
    np.testing.assert_array_equal(mosaic.read(bounds)[0], first)  # path order: the first file wins
    np.testing.assert_array_equal(mosaic.read(bounds, first=str(TUTORIAL_2002))[0], later)
    raw = mosaic.read_raw(bounds, first=str(TUTORIAL_2002))
    assert raw.image.dtype == np.int16 and raw.valid is None
    np.testing.assert_array_equal(raw.image, later)
    np.testing.assert_array_equal(mosaic.read_raw(bounds, first=str(TUTORIAL_STACK)).image, first)
    with pytest.raises(GeossclError, match=r"elsewhere\.tif: not a file of this mosaic"):
        mosaic.read_raw(bounds, first=str(tmp_path / "elsewhere.tif"))


def test_a_file_first_where_it_covers_a_read_is_its_own_nodata_and_all(tmp_path):
    """A view is one acquisition: the gaps of the file read first are not filled from another date."""
    early = write_raster(tmp_path / "d1.tif", np.full((2, 10, 10), 2, dtype=np.int16), nodata=-1)
    data = np.full((2, 10, 10), 1, dtype=np.int16)
    data[:, 0, 3] = -1
    late = write_raster(tmp_path / "d2.tif", data, nodata=-1)
    mosaic = Mosaic([early, late])
    bounds = tuple(mosaic.index.total_bounds)
    assert (mosaic.read(bounds)[0] == 2).all()
    image = mosaic.read(bounds, first=str(late))[0]
    assert np.isnan(image[:, 0, 3]).all() and (image[:, 1:] == 1).all()
    raw = mosaic.read_raw(bounds, first=str(late))
    assert raw.nodata == -1 and (raw.image[:, 0, 3] == -1).all()
    # Where it does not cover the read, the file goes first and the others fill in.
    wider = (bounds[0] - 50, bounds[1], bounds[2], bounds[3])
    left = rasterio.Affine(10.0, 0.0, bounds[0] - 50, 0.0, -10.0, bounds[3])
    west = write_raster(tmp_path / "west.tif", np.full((2, 10, 5), 3, dtype=np.int16), transform=left, nodata=-1)
    image = Mosaic([early, late, west]).read(wider, first=str(late))[0]
    assert (image[:, :, :5] == 3).all() and image[0, 0, 5 + 3] == 2 and image[0, 1, 5 + 3] == 1


def test_a_file_of_several_bands_does_not_stack_with_single_band_files_of_its_grid(tmp_path):
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    nir = write_raster(tmp_path / "nir.tif", np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(GeossclError, match=r"rgb\.tif: has 3 band\(s\) where .*nir\.tif has 1; .*a file of several "
                                           r"bands is a place of its own"):
        Mosaic([rgb, nir])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: [str(d)], "holds no raster files"),
        (lambda d: [str(d / "missing.tif")], "no such file"),
        (lambda d: [str(d / "*.tif")], "pattern matches no files"),
    ],
)
def test_paths_that_find_nothing(tmp_path, make, message):
    with pytest.raises(GeossclError, match=message):
        Mosaic(make(tmp_path))


def test_not_a_raster(tmp_path):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a GeoTIFF")
    with pytest.raises(GeossclError, match=r"notes\.tif: not a readable raster"):
        Mosaic(bad)


def test_raster_without_crs(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", np.zeros((1, 8, 8), np.uint8), crs=None)
    with pytest.raises(GeossclError, match=r"nocrs\.tif: raster has no CRS"):
        Mosaic(path)


def test_band_out_of_range():
    with pytest.raises(GeossclError, match=r"bands: band 5 is out of range; the mosaic has 4"):
        Mosaic(NAIP, bands=[1, 5])


def test_places_with_different_band_counts(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.zeros((3, 8, 8), np.uint8))
    far = rasterio.Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5000000.0)
    # Four bands of data (rasterio labels the fourth alpha; holding many values, it is data, not a mask).
    b = write_raster(tmp_path / "b.tif", (np.arange(4 * 64) % 256).astype(np.uint8).reshape(4, 8, 8), transform=far)
    with pytest.raises(GeossclError, match=r"has 4 band\(s\) where .*a\.tif has 3"):
        Mosaic([a, b])


def test_bad_crs_option():
    with pytest.raises(GeossclError, match="crs: 'EPSG:0' is not a CRS"):
        Mosaic(NAIP, crs="EPSG:0")


def test_per_band_nodata_of_a_vrt():
    """The bundled VRT stacks the NC bands; its last band's nodata (-32768, int16) differs from the others' (-99999)."""
    vrt = Mosaic(str(SAMPLES / "nc_landsat" / "lsat7_2000.vrt"))
    files = Mosaic([str(p) for p in NC_BANDS])
    x, y, _ = files.bounds
    a, _, _ = vrt.read((x.start, y.start, x.stop, y.stop))
    b, _, _ = files.read((x.start, y.start, x.stop, y.stop))
    assert np.isnan(a[5]).sum() > np.isnan(a[0]).sum() > 0
    np.testing.assert_array_equal(a, b)


def test_a_vrt_beside_its_sources_is_left_out(tmp_path, caplog):
    """gdalbuildvrt writes its VRT beside the files it mosaics or stacks: a folder of both read as one would
    read every pixel twice, the VRT taken for another date of the same ground. The VRT is left out, and said to
    be; a VRT of only some of the files given is kept, with a warning that those are read twice."""
    from geosscl.data import find_rasters

    vrt = tmp_path / "lsat7_2000.vrt"
    shutil.copy(SAMPLES / "nc_landsat" / "lsat7_2000.vrt", vrt)
    for band in NC_BANDS:
        shutil.copy(band, tmp_path)
    with caplog.at_level("INFO", logger="geosscl"):
        folder = Mosaic(tmp_path)
    assert len(folder.files) == 6 and str(vrt) not in folder.files
    assert len(folder.places) == 1 and not folder.has_dates and folder.num_bands == 6
    assert f"{vrt}: left out, a VRT of 6 of the other files given, which are read instead" in caplog.text
    x, y, _ = folder.bounds
    window = (x.start, y.start, x.start + 3000, y.start + 3000)
    np.testing.assert_array_equal(folder.read(window)[0], Mosaic(vrt).read(window)[0])
    assert find_rasters(vrt) == [str(vrt)]  # alone, it is the imagery

    caplog.clear()
    some = sorted(str(p) for p in tmp_path.glob("lsat7_2000_[12]0.tif"))
    with caplog.at_level("INFO", logger="geosscl"):
        assert find_rasters([vrt, *some]) == sorted([str(vrt), *some])
    assert f"{vrt}: 2 of its 6 source files are given too, and will be read twice" in caplog.text


@pytest.mark.parametrize("files, crs, res", [
    (NC_BANDS[::5], "EPSG:3857", 28.5),  # float32 with nodata -99999, int16 with -32768
    ([NAIP], "EPSG:3857", 5.0),  # uint8 with nodata 0
    ([NAIP_4326], "EPSG:26914", None),  # uint8, geographic to UTM, at its own resolution there
])
def test_warped_reads_on_the_grid_match_a_reprojection_whatever_the_window(files, crs, res):
    """Reads on the mosaic grid through a CRS change: the file as warped whole onto the grid, whatever the window."""
    from affine import Affine
    from rasterio.warp import reproject

    mosaic = Mosaic(files, crs=crs, res=res)
    res = mosaic.res[0]
    bands = len(files) if len(files) > 1 else 1
    # The reference: each file re-projected whole onto the mosaic grid, once.
    left, bottom, right, top = mosaic.snap(tuple(mosaic.index.total_bounds))
    width, height = round((right - left) / res), round((top - bottom) / res)
    reference = np.full((bands, height, width), np.nan, np.float32)
    for i, path in enumerate(files):
        with rasterio.open(path) as src:
            band = np.full((1, height, width), np.nan, np.float32)
            reproject(rasterio.band(src, [1]), band, src_nodata=src.nodata, dst_transform=Affine(res, 0, left, 0, -res, top),
                      dst_crs=crs, dst_nodata=np.nan, resampling=rasterio.enums.Resampling.bilinear)
            reference[i] = band[0]
    # Where a sub-pixel shift moves the values most: the largest step to a neighbour, per pixel.
    padded = np.pad(reference, ((0, 0), (1, 1), (1, 1)), mode="edge")
    steps = [np.abs(padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] - reference)
             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    slope = np.nanmax(np.stack(steps), axis=0)

    def read(col, row, size):
        bounds = (left + col * res, top - (row + size) * res, left + (col + size) * res, top - row * res)
        return mosaic.read(bounds)[0][:bands]

    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(12):
        col, row = int(rng.integers(-10, width - 40)), int(rng.integers(-10, height - 40))
        size = int(rng.integers(24, 96))
        image = read(col, row, size)
        want = np.full_like(image, np.nan)
        r0, c0, r1, c1 = max(row, 0), max(col, 0), min(row + size, height), min(col + size, width)
        want[:, r0 - row : r1 - row, c0 - col : c1 - col] = reference[:, r0:r1, c0:c1]
        assert (np.isnan(image) != np.isnan(want)).mean() < 0.005  # the footprint's edge, within a pixel
        valid = ~np.isnan(want) & ~np.isnan(image)
        limit = np.full_like(image, np.nan)
        limit[:, r0 - row : r1 - row, c0 - col : c1 - col] = slope[:, r0:r1, c0:c1]
        # Both warps place pixels within GDAL's approximate-transformer tolerance (1/8 px),
        # fitted per chunk warped: not bit-equal, but never more than a quarter-pixel shift apart.
        assert (np.abs(image - want)[valid] <= 0.5 * limit[valid] + 1e-3).mean() > 0.995
        compared += int(valid.sum())
        # The same pixels read through another window come back unchanged.
        shifted = read(col + 7, row + 5, size)
        np.testing.assert_array_equal(shifted[:, : size - 5, : size - 7], image[:, 5:, 7:])
    assert compared > 5000  # the windows did hold data, the integer files' included (not all nodata)


