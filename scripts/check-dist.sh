#!/usr/bin/env bash
# scripts/check-dist.sh: what `pip install pubsubpy-events` would get, checked without uploading anything.
#   1. the sdist, built (python -m build --sdist) from a copy of the checkout's files (tracked and untracked,
#      not ignored: what a commit of the working tree would hold; no stale build/ or egg-info from here)
#   2. the wheel, built from the unpacked sdist (so the sdist alone is enough to build it)
#   3. their contents and metadata: name pubsubpy-events and pyproject's version, every module of pubsubpy,
#      py.typed, the Django app's migrations, the LICENSE in *.dist-info/licenses/, nothing of tests/ or
#      bench/, the entry points; twine check --strict on both (the README renders on PyPI)
#   4. the wheel with its cli extra in a clean virtualenv, run from a directory outside the checkout: import
#      pubsubpy, `pubsubpy --help`, and examples/quickstart.py when it exists
# Uses .venv (build and twine come from the dist group). Temporary files go away at the end; exit 1 on any
# failure, with the reason.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
ensure_venv test   # .venv: the dist group comes with it (a no-op after scripts/test.sh's)

CHECKOUT="$(pwd -P)"
PY="$CHECKOUT/.venv/bin/python"
began=$SECONDS
tmp="$(mktemp -d /tmp/pubsubpy-dist.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
say() { echo "check-dist: $*"; }
fail() { echo "check-dist: FAILED: $*" >&2; exit 1; }
# step WHAT CMD...: CMD, its output kept and shown only when it fails.
step() {
  local what="$1" at=$SECONDS; shift
  if ! "$@" > "$tmp/step.log" 2>&1; then
    cat "$tmp/step.log" >&2
    fail "$what"
  fi
  say "$what ($((SECONDS - at)) s)"
}

for module in build twine; do
  "$PY" -c "import $module" 2>/dev/null || fail "$module is not in .venv (the dist dependency group)"
done
version="$("$PY" -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")"
say "pubsubpy-events $version"

# 1. the sdist, from the files a commit of the working tree would hold
git rev-parse --is-inside-work-tree >/dev/null 2>&1 || fail "not a git checkout: the files to package are git's"
mkdir -p "$tmp/src" "$tmp/dist" "$tmp/unpacked" "$tmp/run"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' file; do if [ -e "$file" ]; then printf '%s\0' "$file"; fi; done \
  | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
step "sdist built" "$PY" -m build --sdist --outdir "$tmp/dist" "$tmp/src"
sdist="$tmp/dist/pubsubpy_events-$version.tar.gz"
[ -f "$sdist" ] || fail "expected $(basename "$sdist"), found: $(ls "$tmp/dist")"

# 2. the wheel, from the unpacked sdist
tar -xzf "$sdist" -C "$tmp/unpacked"
step "wheel built from the sdist" "$PY" -m build --wheel --outdir "$tmp/dist" "$tmp/unpacked/pubsubpy_events-$version"
wheel="$tmp/dist/pubsubpy_events-$version-py3-none-any.whl"
[ -f "$wheel" ] || fail "expected $(basename "$wheel"), found: $(ls "$tmp/dist")"

# 3. contents and metadata
"$PY" - "$sdist" "$wheel" "$version" "$tmp/src" <<'EOF' || fail "the distributions' contents (above)"
import sys, tarfile, zipfile
from email.parser import Parser
from pathlib import Path

sdist, wheel, version, src = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
problems = []

def check_metadata(where, text):
    meta = Parser().parsestr(text)
    expected = {"Name": "pubsubpy-events", "Version": version, "License-Expression": "MIT", "License-File": "LICENSE"}
    for field, value in expected.items():
        if meta.get(field) != value:
            problems.append(f"{where}: {field} is {meta.get(field)!r}, expected {value!r}")
    if meta.get("Description-Content-Type", "").split(";")[0] != "text/markdown" or not meta.get_payload().strip():
        problems.append(f"{where}: no markdown long description (readme)")

with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    dist_info = f"pubsubpy_events-{version}.dist-info"
    check_metadata("wheel METADATA", zf.read(f"{dist_info}/METADATA").decode())
    entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
for name in sorted(names):
    top = name.split("/")[0]
    if top not in ("pubsubpy", dist_info):
        problems.append(f"wheel: {name} is outside pubsubpy/ and its dist-info")
    if "/__pycache__/" in name or name.endswith(".pyc"):
        problems.append(f"wheel: compiled file {name}")
if any(name.startswith(("tests/", "bench/")) or "/tests/" in name for name in names):
    problems.append("wheel: holds tests/ or bench/")
# every module of the package (a subpackage without __init__.py would be left out), py.typed, the migrations
wanted = {p.relative_to(src).as_posix() for p in (src / "pubsubpy").rglob("*") if p.is_file()
          and p.suffix in (".py", ".typed") and "__pycache__" not in p.parts}
migrations = {name for name in wanted if name.startswith("pubsubpy/contrib/django/migrations/")}
if "pubsubpy/contrib/django/migrations/0001_initial.py" not in migrations:
    problems.append("the checkout has no pubsubpy/contrib/django/migrations/0001_initial.py")
for name in sorted(wanted - names):
    problems.append(f"wheel: missing {name}")
for name in ("pubsubpy/py.typed", f"{dist_info}/licenses/LICENSE"):
    if name not in names:
        problems.append(f"wheel: missing {name}")
for line in ("pubsubpy = pubsubpy.cli:main", "pubsubpy = pubsubpy._pytest_plugin"):
    if line not in entry_points:
        problems.append(f"wheel: entry point {line!r} missing")

with tarfile.open(sdist) as tf:
    members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    check_metadata("sdist PKG-INFO", tf.extractfile(f"pubsubpy_events-{version}/PKG-INFO").read().decode())
for name in ("pyproject.toml", "README.md", "LICENSE", "pubsubpy/py.typed",
             "pubsubpy/contrib/django/migrations/0001_initial.py"):
    if name not in members:
        problems.append(f"sdist: missing {name}")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-dist: contents: wheel {len(names)} files ({len(migrations)} migration files), sdist {len(members)} "
      "entries; name, version, licence, readme and entry points as expected")
EOF
step "twine check --strict (sdist and wheel)" "$PY" -m twine check --strict "$sdist" "$wheel"

# 4. a clean virtualenv, used from outside the checkout
step "clean virtualenv made" "$PY" -m venv "$tmp/venv"
step "wheel installed there with [cli]" "$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "$wheel[cli]"
# no PYTHONPATH, no checkout on the path: what runs is what the wheel installed
run() { (cd "$tmp/run" && env -u PYTHONPATH -u PUBSUBPY_URL "$@"); }
step "import pubsubpy from the installed wheel" run "$tmp/venv/bin/python" -c "
import importlib.metadata as md, importlib.util, pathlib, sys
import pubsubpy
where = pathlib.Path(pubsubpy.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, f'pubsubpy imported from {where}, not the venv'
assert md.version('pubsubpy-events') == '$version', md.version('pubsubpy-events')
for ep in md.distribution('pubsubpy-events').entry_points:
    assert importlib.util.find_spec(ep.module) is not None, f'entry point {ep.group}:{ep.name} names {ep.module}: missing'
"
step "pubsubpy --help" run "$tmp/venv/bin/pubsubpy" --help
if [ -f examples/quickstart.py ]; then
  cp examples/quickstart.py "$tmp/run/"
  step "examples/quickstart.py on the installed wheel" run timeout 120 "$tmp/venv/bin/python" quickstart.py
  sed 's/^/    /' "$tmp/step.log"
else
  say "examples/quickstart.py: not in the checkout, not run"
fi
say "passed in $((SECONDS - began)) s; nothing uploaded"
