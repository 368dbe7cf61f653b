#!/usr/bin/env bash
# Every CUDA check of wsim in one call on a lent GPU machine (the device tool; ../shared/gpu/README.md has
# how the wheels travel there). Logs and figures go to $OUT (default ./gpu-out). Each step has its own
# time limit so that one slow step cannot starve the rest.
#   bash scripts/gpu_check.sh
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} WSIM_DETERMINISTIC=1
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/summary.txt"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc in $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
  tail -n 25 "$OUT/$name.log"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import sys, torch, warp, numpy; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'warp', warp.__version__, 'numpy', numpy.__version__)"
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# the CUDA test files (test_graph.py: CUDA graphs against tapes), and every test that runs on the suite's
# `device` fixture (CUDA when present)
step tests 230 python3 -m pytest -q -p no:cacheprovider -rs -n 8 \
  tests/test_render_cuda.py tests/test_cuda_physics.py tests/test_analytic.py tests/test_bridge.py \
  tests/test_cloth.py tests/test_errors.py tests/test_fem.py tests/test_gradients.py tests/test_landscape.py \
  tests/test_rigid_dynamics.py tests/test_rotors.py tests/test_graph.py
# the parity figures (printed by the tests with -s), serially, after nvdiffrast's plugin is built
step parity 60 python3 -m pytest -q -p no:cacheprovider -s tests/test_render_cuda.py
step table4 100 python3 benchmarks/bench_table4.py --device cuda:0
step fem 60 python3 benchmarks/bench_fem.py --device cuda:0
step render 70 python3 benchmarks/bench_render.py
step rigid_mass_cuda 60 bash -c 'time python3 -m wsim.cli run rigid-mass --device cuda --quiet --out /tmp/rm-cuda --set video_format=gif; cat /tmp/rm-cuda/results.json | head -c 3000'
step rigid_mass_cpu 60 bash -c 'time python3 -m wsim.cli run rigid-mass --device cpu --quiet --out /tmp/rm-cpu --set video_format=gif'
cat "$OUT/summary.txt"
