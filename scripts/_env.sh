# Shared set-up for scripts/test and scripts/demo: a project venv and, where needed, mosquitto.
# Sourced, not run.

ensure_venv() {
  local python=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
  fi
  # Reinstall only when pyproject.toml changed since the last install.
  local stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "installing lem-edge and its test dependencies into .venv (log: .venv/install.log) ..."
    if ! { .venv/bin/python -m pip install -q --upgrade pip &&
           .venv/bin/python -m pip install -q -e ".[test]"; } >.venv/install.log 2>&1; then
      tail -30 .venv/install.log >&2
      echo "pip install failed; full log in .venv/install.log" >&2
      return 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
  fi
}

mosquitto_path() {
  command -v mosquitto 2>/dev/null || { [ -x /usr/sbin/mosquitto ] && echo /usr/sbin/mosquitto; } || true
}

ensure_mosquitto() {
  if [ -n "$(mosquitto_path)" ]; then return 0; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing mosquitto (Debian package) ..."
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto >/dev/null
  else
    echo "mosquitto is not installed and cannot be installed here (need root and apt-get);" \
         "tests that need a broker will fail" >&2
  fi
}
