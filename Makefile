# Two commands on a fresh machine: `make serve` runs the service, `make test` runs the tests.
.PHONY: setup serve serve-tiny test bench bench-quick clean

setup:
	./scripts/setup.sh

serve: setup
	.venv/bin/model-server serve

# Offline smoke run with the repo-built tiny test model (not a translator).
serve-tiny: setup
	MODEL_SERVER_PROFILE=tiny .venv/bin/model-server serve

test:
	./scripts/test.sh

bench: setup
	.venv/bin/python -m benchmarks.run

bench-quick: setup
	.venv/bin/python -m benchmarks.run --model tiny --quick

clean:
	rm -rf .venv models .pytest_cache
