# Shared by scripts/*.sh: a project virtualenv in .venv with the given extras installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
# ensure_venv EXTRAS [DIR [PYTHON]]: a virtualenv in DIR (default .venv) with pubsubpy[EXTRAS] installed.
ensure_venv() {
  local extras="$1" dir="${2:-.venv}" python="${3:-$PYTHON}"
  if [ ! -x "$dir/bin/python" ]; then
    "$python" -m venv "$dir"
  fi
  local stamp="$dir/.installed-${extras//,/-}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[${extras}]"
    touch "$stamp"
  fi
}
# find_python 3.10: an interpreter of that version (pyenv's, else on PATH), or nothing.
find_python() {
  local version="$1" root="${PYENV_ROOT:-${HOME:-/root}/.pyenv}" candidate
  for candidate in "$root"/versions/"$version".*/bin/python"$version" "$(command -v "python$version" || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c "import sys; assert sys.version_info[:2] == tuple(map(int, '$version'.split('.')))" 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
