.PHONY: test lint
test:
	python -m pytest -q
lint:
	flake8 pyro_vae tests tutorials benchmarks
	isort --check-only pyro_vae tests tutorials benchmarks
