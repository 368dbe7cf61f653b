#!/usr/bin/env bash
# Pack the Python packages that the lent GPU machine lacks (Python 3.12, x86-64, no registry) into parts
# that the device tool can carry one per call (64 MiB each with the working tree), at the versions of
# this checkout's .venv. xz packs warp-lang's 150 MB wheel to about 100 MB, so three calls carry it all:
#   run(carry=['.gpu-wheels-0'], command='true')
#   run(carry=['.gpu-wheels-1'], command='true')
#   run(carry=['.gpu-wheels-2'], command='bash .gpu-wheels-2/install.sh && bash scripts/gpu_check.sh')
# (each within the machine's warm period of the previous). Takes about 6 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu-wheels\*/' .git/info/exclude 2>/dev/null || echo '/.gpu-wheels*/' >> .git/info/exclude
version() { .venv/bin/python -m pip freeze | grep -i "^$1==" | cut -d= -f3; }
pins="warp-lang==$(version warp-lang) newton==$(version newton) pydantic==$(version pydantic)
  pydantic-core==$(version pydantic-core) usd-core==$(version usd-core) diffrp-nvdiffrast annotated-types
  typing-inspection trimesh==$(version trimesh) meshio==$(version meshio)"
work=$(mktemp -d)
plat=""
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do plat="$plat --platform ${p}_x86_64"; done
# shellcheck disable=SC2086
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat \
  -d "$work/dl" $pins 2>&1 | grep -v 'is ignored' || true
mkdir -p "$work/site" "$work/usd"
for w in "$work"/dl/*.whl; do
  case $w in *usd_core*) unzip -qo "$w" -d "$work/usd" ;; *) unzip -qo "$w" -d "$work/site" ;; esac
done
rm -rf "$work"/site/warp/examples "$work"/site/warp/tests "$work"/site/newton/tests "$work"/site/newton/examples
tar -C "$work/site" -cf - . | xz -9 -T2 > "$work/site.tar.xz"
tar -C "$work/usd" -cf - . | xz -9 -T2 > "$work/usd.tar.xz"
rm -rf .gpu-wheels-*; mkdir -p .gpu-wheels-0 .gpu-wheels-1 .gpu-wheels-2
split -b 54M -d -a 2 "$work/site.tar.xz" "$work/sitepart."
mv "$work/sitepart.00" .gpu-wheels-0/; mv "$work/sitepart.01" .gpu-wheels-1/
[ ! -e "$work/sitepart.02" ] || { echo "site packages need a fourth part: split further" >&2; exit 1; }
mv "$work/usd.tar.xz" .gpu-wheels-2/
cat > .gpu-wheels-2/install.sh <<'EOF'
#!/usr/bin/env bash
# on the GPU machine: join the carried parts and unpack them into /tmp/site (installed-wheel layout)
set -eu
if [ -d /tmp/site/warp ] && [ -d /tmp/site/pxr ]; then echo "already installed"; exit 0; fi
mkdir -p /tmp/site
cat .gpu-wheels-0/sitepart.00 .gpu-wheels-1/sitepart.01 > /tmp/site.tar.xz
python3 - <<'PY'
import tarfile
for name in ("/tmp/site.tar.xz", ".gpu-wheels-2/usd.tar.xz"):
    with tarfile.open(name) as t:
        t.extractall("/tmp/site", filter="fully_trusted")
PY
echo "installed: $(ls /tmp/site | grep -v dist-info | tr '\n' ' ')"
EOF
rm -rf "$work"
ls -la .gpu-wheels-*
