# wsim on the CUDA PyTorch image of the tested torch (2.13.0), with the nvdiffrast renderer backend
# compiled into the image.
#   docker build -t wsim .
#   docker run --gpus all -v "$PWD/runs:/home/wsim/runs" wsim wsim run rigid-mass --device cuda
#   docker run --gpus all wsim python -m pytest -q /opt/wsim/tests
# Host requirement: an NVIDIA R580 or newer driver (CUDA 13). The image's torch is built for CUDA 13.2,
# and warp-lang 1.19.0 from PyPI is built with CUDA Toolkit 13.4 (Warp's installation guide: PyPI wheels
# need an R580+ driver and a Turing, sm_75, or newer GPU; CUDA 12 builds of Warp are only on GitHub
# Releases). For an older driver, rebuild on a cuda12.6 base with a warp-lang "+cu12" wheel.
FROM pytorch/pytorch:2.13.0-cuda13.2-cudnn9-devel

ARG WARP_VERSION=1.19.0
# GPU architectures nvdiffrast is compiled for: Turing (7.5) to Blackwell (10.0 data centre, 12.0
# consumer); CUDA 13 supports nothing older than 7.5.
ENV TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0;10.0;12.0" \
    TORCH_EXTENSIONS_DIR=/opt/torch_extensions \
    DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WSIM_DETERMINISTIC=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --shell /bin/bash wsim \
    && mkdir -p "$TORCH_EXTENSIONS_DIR" && chown wsim "$TORCH_EXTENSIONS_DIR"

WORKDIR /opt/wsim
COPY pyproject.toml README.md ./
COPY wsim ./wsim
COPY configs ./configs
# A regular (not editable) install: the shipped configs come from the installed package.
# The base image's torch (2.13.0, CUDA 13.2) satisfies torch>=2.13 and is kept.
RUN pip install "warp-lang==${WARP_VERSION}" ".[cuda,test]" \
    && python -c "import torch, warp; assert torch.__version__.startswith('2.13'), torch.__version__; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'warp', warp.__version__)"
COPY tests ./tests
COPY scripts ./scripts

# nvdiffrast compiles its plugin with torch's cpp_extension on first use; doing it here, as the user
# that runs wsim, puts the library in TORCH_EXTENSIONS_DIR for every container. No GPU is needed to
# compile: nvcc targets TORCH_CUDA_ARCH_LIST instead of asking the device.
USER wsim
RUN python scripts/build_nvdiffrast.py
WORKDIR /home/wsim
CMD ["wsim", "--help"]
