# xyz2image-gpu: the targets people expect. PYTHON may point at a venv's interpreter.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: help install dev-install example test test-gpu test-fake-gpu lint bench bench-full gpu-check \
	gpu-check-dry clean

help:
	@echo "install      pip install the package (builds the optional compiled CPU kernel)"
	@echo "dev-install  install with test/benchmark dependencies (editable)"
	@echo "example      render the bundled example structures into ./npz_stacks"
	@echo "test         run the test suite (NumPy; CuPy too where a GPU is present)"
	@echo "test-gpu     run only the tests that have a device parameter, on the GPU"
	@echo "test-fake-gpu  the suite as a GPU machine sees it: fails a test that reaches the GPU unpinned"
	@echo "lint         ruff check"
	@echo "bench        CPU benchmark suite (--quick, a few minutes), results in benchmarks/results/"
	@echo "bench-full   the same with more points and longer runs"
	@echo "gpu-check    staged GPU check, JSON in benchmarks/results/ (GPU_CHECK_ARGS=..., see"
	@echo "             benchmarks/README.md); exit 2 without a usable GPU"
	@echo "gpu-check-dry  the same without a GPU (--allow-no-gpu --quick), JSON to a temporary folder"

install:
	$(PIP) install .

dev-install:
	$(PIP) install -e ".[dev,zarr,dask]"

example:
	xyz2image-gpu example structures
	xyz2image-gpu render structures --n-rotation 64 -o npz_stacks

test:
	$(PYTHON) -m pytest -q

test-gpu:
	$(PYTHON) -m pytest -q -m gpu

test-fake-gpu:
	XYZ2IMAGE_GPU_TEST_FAKE_GPU=1 $(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check xyz2image_gpu tests benchmarks validation

bench:
	$(PYTHON) benchmarks/run_all.py --quick

bench-full:
	$(PYTHON) benchmarks/run_all.py

GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

gpu-check-dry:
	$(PYTHON) benchmarks/gpu_check.py --allow-no-gpu --quick --json "$$(mktemp -d)/gpu_check.json"

clean:
	rm -rf build dist *.egg-info .pytest_cache xyz2image_gpu/pipeline/kernels/*.so npz_stacks structures
