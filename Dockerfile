# wsim on a CUDA PyTorch base image, with the nvdiffrast renderer backend.
#   docker build -t wsim .
#   docker run --gpus all -v $PWD/runs:/opt/wsim/runs wsim wsim run rigid-mass --device cuda
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"
RUN apt-get update && apt-get install -y --no-install-recommends build-essential git ffmpeg \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/wsim
COPY pyproject.toml README.md ./
COPY wsim ./wsim
COPY configs ./configs
COPY tests ./tests
COPY benchmarks ./benchmarks
# The base image's torch satisfies wsim's torch>=2.1; nvdiffrast (diffrp-nvdiffrast) compiles its CUDA
# plugin with ninja on first use.
RUN pip install -e ".[cuda,test]"
CMD ["wsim", "--help"]
