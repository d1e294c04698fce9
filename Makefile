# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once (re-created only when pyproject.toml changes) and reuse it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.geosscl-installed
DEMO_OUT ?= demo_out

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
	$(BIN)/geosscl pretrain sample_data/naip/m_4709963_se_14_1_20200831.tif --rgb \
		--out $(DEMO_OUT)/pretrain --crop-size 64 --batch-size 16 --max-steps 40 --num-workers 2 --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
