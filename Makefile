# Every target creates .venv on first use, so a fresh clone needs only `make run` or `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench fuzz soak clean

# Debian's python3 lacks venv until python3-venv is installed; as root, install it.
$(BIN)/python:
	@$(PY) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing python3-venv (apt)"; apt-get update -qq && \
	    apt-get install -y -qq python3-venv >/dev/null && $(PY) -m venv $(VENV); \
	  else echo "cannot create .venv: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Flags for the relay: make run ARGS="--rate-limit 0 --host 0.0.0.0"
ARGS ?=
run: $(STAMP)
	$(BIN)/chat-relay start $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check relay transports clients benchmarks tests
	$(BIN)/mypy

# Debian packages that tests drive: a browser, and an IRC client in a terminal.
unit: $(STAMP)
	sh tests/ensure_apt.sh chromium chromium /usr/bin/chromium
	sh tests/ensure_apt.sh irssi "irssi tmux" "irssi tmux"
	sh tests/ensure_apt.sh redis redis-server redis-server
	sh tests/ensure_apt.sh weechat "weechat-curses tmux" "weechat tmux"
	$(BIN)/python -m pytest -q

test: lint unit

# The README's pictures of the web chat, taken by the browser test.
.PHONY: screenshots
screenshots: $(STAMP)
	sh tests/ensure_apt.sh chromium chromium /usr/bin/chromium
	CHAT_RELAY_SCREENSHOTS=docs/screenshots $(BIN)/python -m pytest -q tests/clients/test_web_page.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks.suite

# Issue 4's bus-gap and fault figures on loopback (a few minutes): 1M messages with
# no bus gap and a tiny HWM whose gaps are counted; slow consumer, kill -9 of a worker
# and of the hub. Tables print; JSON lands in benchmarks/results/.
.PHONY: bench-faults
bench-faults: $(STAMP)
	$(BIN)/python -m benchmarks.experiments.bus_gaps
	$(BIN)/python -m benchmarks.experiments.faults

# Codec fuzzing (outside CI): atheris (coverage-guided) when it installs, else the
# built-in mutation engine. FUZZ_RUNS=N to change the count. Then the hostile
# suite against real relays with HOSTILE_EXAMPLES examples per dialect (make test
# runs 30).
FUZZ_RUNS ?= 1000000
HOSTILE_EXAMPLES ?= 2000
fuzz: $(STAMP)
	-$(BIN)/python -m pip install -q atheris
	$(BIN)/python -m tests.fuzz.fuzz_codecs --runs $(FUZZ_RUNS)
	CHAT_RELAY_HOSTILE_EXAMPLES=$(HOSTILE_EXAMPLES) $(BIN)/python -m pytest -q \
	  tests/integration/test_hostile.py

# Connection churn and traffic against a real relay, then a leak check (RSS, fds,
# threads). SOAK_MINUTES=N to shorten; JSON lands in benchmarks/results/.
SOAK_MINUTES ?= 30
soak: $(STAMP)
	$(BIN)/python -m tests.soak.soak --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) build *.egg-info
