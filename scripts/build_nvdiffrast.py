"""Compile nvdiffrast's CUDA plugin ahead of time (run at image build time; no GPU needed).

nvdiffrast builds its plugin with ``torch.utils.cpp_extension.load`` on first use, into
``$TORCH_EXTENSIONS_DIR/<plugin name>``, and later imports it from there without compiling. The
compile step needs nvcc and ``TORCH_CUDA_ARCH_LIST`` (else torch asks the GPU for its architecture).
Importing the finished library may need the CUDA driver, which a build container lacks: that import
failure is accepted once the library exists, and reported.
"""

import glob
import os
import sys

import torch.utils.cpp_extension as cpp_extension

if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    sys.exit("set TORCH_CUDA_ARCH_LIST (e.g. '7.5;8.0;8.6;8.9;9.0;10.0;12.0'): without a GPU torch cannot pick one")
if cpp_extension.CUDA_HOME is None:
    sys.exit("nvcc not found (CUDA_HOME unset): compiling nvdiffrast needs a CUDA devel image")

import nvdiffrast.torch.ops as ops  # noqa: E402

try:
    ops._get_plugin(gl=False)
    print("nvdiffrast plugin compiled and loaded")
except ImportError as error:
    print(f"nvdiffrast plugin compiled; loading it needs the CUDA driver (absent at build time): {error}")
built = glob.glob(os.path.join(os.environ.get("TORCH_EXTENSIONS_DIR", ""), "**", "nvdiffrast_plugin*.so"), recursive=True)
if not built:
    sys.exit(f"no nvdiffrast plugin library under TORCH_EXTENSIONS_DIR={os.environ.get('TORCH_EXTENSIONS_DIR')}")
print("built:", *built)
