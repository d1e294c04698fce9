# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once, with the versions in constraints.txt (updated when pyproject.toml or constraints.txt
# changes), and reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geosscl-installed
DEMO_OUT ?= demo_out
NC_BANDS := $(sort $(wildcard sample_data/nc_landsat/lsat7_2000_*.tif))

BUNDLED_MODEL := sample_data/models/nc_landuse.safetensors
NC_SCENE := sample_data/nc_landsat/lsat7_2000.vrt

.PHONY: demo test venv plugin clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DEMO_OUT)
	$(BIN)/geosscl pairs sample_data/naip/m_4709963_se_14_1_20200831.tif \
		--bands 1,2,3 --count 6 --view-size 128 --seed 0 \
		--output $(DEMO_OUT)/pairs.png --overwrite
	rm -rf $(DEMO_OUT)/pretrain
	$(BIN)/geosscl pretrain $(NC_BANDS) --out $(DEMO_OUT)/pretrain \
		--crop-size 64 --batch-size 16 --max-steps 40 --num-workers 2 --seed 0
	$(BIN)/geosscl finetune $(NC_BANDS) --labels sample_data/nc_landsat/strata.tif \
		--classes sample_data/nc_landsat/classes.yaml --init $(DEMO_OUT)/pretrain/last.ckpt \
		--holdout-region sample_data/nc_landsat/test_region.geojson --label-fraction 0.2 \
		--crop-size 64 --batch-size 16 --max-steps 60 --num-workers 2 --seed 0 \
		--out $(DEMO_OUT)/model.safetensors --overwrite
	$(BIN)/geosscl evaluate $(DEMO_OUT)/model.safetensors $(NC_BANDS) \
		--labels sample_data/nc_landsat/strata.tif --region sample_data/nc_landsat/test_region.geojson \
		--json $(DEMO_OUT)/metrics.json --png $(DEMO_OUT)/confusion.png
	$(BIN)/geosscl predict $(NC_SCENE) -m $(DEMO_OUT)/model.safetensors -o $(DEMO_OUT)/classes.tif \
		--preview $(DEMO_OUT)/classes.png --preview-rgb 3,2,1 --overwrite
	$(BIN)/geosscl probe $(NC_BANDS) --labels sample_data/nc_landsat/strata.tif \
		--classes sample_data/nc_landsat/classes.yaml --init $(DEMO_OUT)/pretrain/last.ckpt \
		--holdout-region sample_data/nc_landsat/test_region.geojson --label-fraction 0.2 --crop-size 64 --seed 0 \
		--stages 1 --output $(DEMO_OUT)/stage1.safetensors --overwrite
	$(BIN)/geosscl suggest $(DEMO_OUT)/stage1.safetensors $(NC_BANDS) --count 8 --tile-size 32 \
		--exclude sample_data/nc_landsat/test_region.geojson -o $(DEMO_OUT)/suggested.gpkg --overwrite
	$(BIN)/geosscl predict $(NC_SCENE) -m $(BUNDLED_MODEL) -o $(DEMO_OUT)/bundled_classes.tif \
		--vector $(DEMO_OUT)/bundled_classes.gpkg --preview $(DEMO_OUT)/bundled_classes.png --preview-rgb 3,2,1 --overwrite
	@echo
	@echo "demo outputs in $(DEMO_OUT)/:"
	@echo "  pairs.png                  view pairs drawn in map coordinates (NAIP)"
	@echo "  pretrain/                  SSCCL run: checkpoints, metrics.csv, loss_curves.png"
	@echo "  model.safetensors          the segmenter fine-tuned from it with 20 % of the labels"
	@echo "  metrics.json, confusion.png  its scores on the held-out eastern third"
	@echo "  classes.tif, classes.png   its class map of the scene (COG) and preview"
	@echo "  stage1.safetensors         a linear classifier of the run's stride-2 encoder stage, same labels (geosscl probe -o)"
	@echo "  suggested.gpkg             the 8 tiles of 32 px where that classifier is least sure: where to label next"
	@echo "  bundled_classes.{tif,gpkg,png}  the same with the bundled model ($(BUNDLED_MODEL))"

# One pytest-xdist worker per core, up to 4; loadgroup hands out the tests one at a time in collection order, where
# tests/conftest.py puts the long ones (the plugin's QGIS suite) first. The 25 slowest are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadgroup --durations 25

# An installable QGIS plugin: Plugins > Manage and Install Plugins > Install from ZIP.
plugin:
	mkdir -p dist
	rm -f dist/geosscl_processing.zip
	cd qgis_plugin && $(PYTHON) -c "import pathlib, zipfile; z = zipfile.ZipFile('../dist/geosscl_processing.zip', 'w', zipfile.ZIP_DEFLATED); [z.write(p) for p in sorted(pathlib.Path('geosscl_processing').rglob('*')) if p.is_file() and '__pycache__' not in p.parts]; z.close()"
	@echo "wrote dist/geosscl_processing.zip"

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
