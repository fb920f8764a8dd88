.PHONY: test lint
test:
	python -m pytest -q
lint:
	black --check -l 88 pyro_vae tests tutorials benchmarks
	flake8 pyro_vae tests tutorials benchmarks
	isort --check-only pyro_vae tests tutorials benchmarks
