# gatewayd developer entry points. `make demo` and `make test` work on a fresh Debian 12.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# System packages the tests use as real parts: a broker, a serial pty pair, journald, libsystemd.
APT_PACKAGES := python3-venv python3-dev gcc mosquitto socat systemd libsystemd-dev pkg-config \
                binutils-aarch64-linux-gnu binutils-x86-64-linux-gnu \
                openssl shellcheck util-linux

.PHONY: setup system-packages test unit lint demo check-example bench chaos deb debs clean

setup: $(STAMP)

system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: make sure these are installed: $(APT_PACKAGES)"; fi

$(STAMP): pyproject.toml | system-packages
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip>=25.1'
	$(PY) -m pip install -q -e '.[systemd,sim]' --group test --group lint --group deploy
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q
	$(PY) -m ruff check gatewayd tests
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest -q tests/unit tests/config_cases

lint: setup
	$(PY) -m ruff check gatewayd tests
	$(PY) -m mypy

check-example: setup
	$(VENV)/bin/gatewayd check config/gatewayd.yaml

demo: setup
	$(VENV)/bin/gatewayd demo

# dist/gatewayd_<version>+deb<12|13>_<amd64|arm64>.deb: a self-contained venv on the box's
# /usr/bin/python3 (installs offline), for Debian 12 and 13 on amd64 and arm64, built here.
# One of them: make deb DEB_TARGETS=trixie-arm64
DEB_TARGETS ?= bookworm-amd64 bookworm-arm64 trixie-amd64 trixie-arm64
deb debs: setup
	PIP_PYTHON=$(PY) packaging/build-deb.sh dist $(DEB_TARGETS)

bench: setup
	$(PY) -m tests.bench

chaos: setup
	$(PY) -m tests.chaos

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
