# Shared by scripts/*.sh: a project virtualenv in .venv with the given extras and dependency groups installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
# The extras users install (pyproject's [project.optional-dependencies]); every other name is a dependency group.
USER_EXTRAS="cli,django,celery,otel,prometheus"
# ensure_venv NAMES [DIR [PYTHON]]: a virtualenv in DIR (default .venv) with the project installed editable and
# NAMES, comma-separated: extras (cli, django, celery, otel, prometheus) and PEP 735 dependency groups (test,
# bench, docs, dist). The test group brings every user extra too: the suite exercises them all, and a group
# cannot name the project's extras; in the main .venv it brings the docs and dist groups too (mkdocs, build and
# twine for scripts/check-dist.sh). Done again when pyproject.toml is newer than the stamp of NAMES.
ensure_venv() {
  local names="$1" dir="${2:-.venv}" python="${3:-$PYTHON}" name extras="" groups=()
  for name in ${names//,/ }; do
    case ",$USER_EXTRAS," in
      *",$name,"*) extras="${extras:+$extras,}$name" ;;
      *) groups+=(--group "$name")
         if [ "$name" = test ]; then
           extras="$USER_EXTRAS"
           if [ "$dir" = .venv ]; then groups+=(--group docs --group dist); fi
         fi ;;
    esac
  done
  if [ ! -x "$dir/bin/python" ]; then
    "$python" -m venv "$dir"
  fi
  local stamp="$dir/.installed-${names//,/-}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # --group needs pip 25.1
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25.1"
    # The distribution was called pubsubpy before 0.2 (a name PyPI gives another project): a venv made then
    # holds it, with the same `pubsubpy` command; it goes first, its egg-info in the checkout with it (on the
    # path when pip runs from here, so it would stand for the installed one).
    rm -rf pubsubpy.egg-info
    if compgen -G "$dir/lib/python3*/site-packages/pubsubpy-[0-9]*.dist-info" >/dev/null; then
      "$dir/bin/python" -m pip uninstall --quiet --disable-pip-version-check --yes pubsubpy
    fi
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}" \
      "${groups[@]}"
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
