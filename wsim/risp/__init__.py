"""RISP (ICLR 2022): a rendering-invariant state predictor trained on images wsim renders under random
rendering parameters, with the rendering-gradient regulariser, and used as a loss that compares states
instead of pixels (``loss.type: risp``).

``domain``: the rendering parameters psi and the image Jacobian dI/dpsi; ``state``: the state of a
rollout; ``network``: the ResNet-18 variant; ``data``: training images in shards; ``train``: the
training loss (Eq. 8 + Eq. 12 by Theorem 1) and loop.
"""
