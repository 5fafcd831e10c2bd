# Two commands a fresh machine needs: `make run` and `make test`. Each installs what it
# needs into .venv first (only again when pyproject.toml changes): `run` only exauth and
# its runtime libraries, `test` also the test tools, which build Kerberos bindings.
VENV ?= .venv
PY := $(VENV)/bin/python
# What the test tools need from the system: gssapi/krb5 compile against MIT Kerberos
# (libkrb5-dev, gcc), and the Kerberos tests start a throwaway KDC (krb5-kdc,
# krb5-admin-server, krb5-user) and shift its clock with faketime.

.PHONY: run test lint bench install install-run test-system
install: $(VENV)/.installed

$(VENV)/.created:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed-run: pyproject.toml $(VENV)/.created
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.created
	@$(MAKE) --no-print-directory test-system
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed-run

install-run: $(VENV)/.installed-run

# Says which Debian packages are missing instead of failing deep inside a C build.
test-system:
	@missing=""; \
	command -v krb5-config >/dev/null || missing="$$missing libkrb5-dev"; \
	command -v gcc >/dev/null || missing="$$missing gcc libc6-dev"; \
	{ command -v krb5kdc >/dev/null || [ -x /usr/sbin/krb5kdc ]; } || missing="$$missing krb5-kdc"; \
	{ command -v kadmin.local >/dev/null || [ -x /usr/sbin/kadmin.local ]; } || missing="$$missing krb5-admin-server"; \
	command -v kinit >/dev/null || missing="$$missing krb5-user"; \
	command -v faketime >/dev/null || missing="$$missing faketime"; \
	if [ -n "$$missing" ]; then \
	  echo "make test: missing system packages:$$missing"; \
	  echo "  Debian/Ubuntu: sudo apt-get install$$missing"; \
	  echo "  (the tests build Kerberos bindings and start a throwaway MIT KDC; .ci/run installs them itself)"; \
	  exit 1; \
	fi

run: install-run
	$(VENV)/bin/exauth status

test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done
