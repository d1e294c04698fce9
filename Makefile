# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once (re-created only when pyproject.toml changes) and reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geosscl-installed
DEMO_OUT ?= demo_out
NC_BANDS := $(sort $(wildcard sample_data/nc_landsat/lsat7_2000_*.tif))

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
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
	@echo "demo outputs in $(DEMO_OUT)/: pairs.png, pretrain/ (checkpoints, loss_curves.png), model.safetensors, metrics.json, confusion.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
