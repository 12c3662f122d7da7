# Set-up commands: `make demo` and `make test` work on a fresh clone (they create .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
QT_DEBS := xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-shape0 libegl1 libdbus-1-3 libgl1 libfontconfig1 dicom3tools
# torch/torchvision: the pair that installs here from the local disk (a CUDA build that runs on CPU).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install qt-debs bench weights inverseform-net docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e ".[pyqt6,test]"
	touch $(STAMP)

install: $(STAMP)

qt-debs:
	@if ! command -v xvfb-run >/dev/null 2>&1 || ! command -v dciodvfy >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-cursor; then \
		if [ "$$(id -u)" = "0" ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(QT_DEBS); \
		else \
			echo "Qt needs: $(QT_DEBS) (install them as root)"; \
		fi; \
	fi

demo: install qt-debs
	@if [ -n "$$DISPLAY" ]; then $(VENV)/bin/napari-segloss demo; \
	else mkdir -p build && xvfb-run -a -s "-screen 0 1600x1000x24" $(VENV)/bin/napari-segloss demo --screenshot build/demo.png && echo "no display: saved a screenshot of the demo to build/demo.png"; fi

test: install qt-debs
	QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) -m pytest -q tests

bench: install
	$(PY) benchmarks/bench_inference.py

# real-data checkpoints (needs ../shared/data/figshare): the shared pretraining once, then two halves
weights: install
	$(PY) scripts/make_weights.py --pretrain-only
	$(PY) scripts/make_weights.py --part 1/2 & first=$$!; $(PY) scripts/make_weights.py --part 2/2; \
		second=$$?; wait $$first && exit $$second

# the frozen net of the inverseform loss (weights/aux); retrain the inverseform checkpoint after it
inverseform-net: install
	$(PY) scripts/train_inverseform.py

docs: install
	$(PY) scripts/make_loss_table.py

clean:
	rm -rf $(VENV) build dist
