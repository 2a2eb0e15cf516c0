# The two set-up commands: `make run` and `make test`. Both create .venv when missing,
# install the project into it (editable, with the test tools) and are safe to repeat.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test install lint format clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(PIP_ARGS) -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/vit-desktop $(ARGS)

test: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean-venv:
	rm -rf $(VENV)

# The frozen app for this platform (PyInstaller, several GB with a CUDA build of PyTorch):
# dist/vit-desktop/, then its self-test.  See README, "Install".
.PHONY: package install-desktop
package: install
	PYTHON=$(PY) packaging/build.sh

# The launcher, AppStream metainfo and icons in ~/.local/share (Linux).  The launcher runs
# DESKTOP_EXEC: .venv's vit-desktop-gui when there is one, else vit-desktop-gui from PATH;
# e.g. `make install-desktop DESKTOP_EXEC=dist/vit-desktop/vit-desktop-gui`.
DESKTOP_EXEC ?= $(wildcard $(VENV)/bin/vit-desktop-gui)
install-desktop:
	packaging/linux/install-desktop.sh $(DESKTOP_EXEC)
