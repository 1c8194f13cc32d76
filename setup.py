"""Installs the InternImage monorepo: the ``ops_dcnv3`` package with its compiled
extension (C++ CPU kernels always; CUDA kernels when a toolkit is found or
``FORCE_CUDA=1``; ``WITH_CUDA=0`` skips them) and the task trees' Python packages.

Build against the installed torch: ``pip install --no-build-isolation .`` (or
``python setup.py build_ext --inplace --build-temp build/inplace`` for a checkout, as
tools/bootstrap.sh does: its own build folder, so a ``pip install .`` in between does not
invalidate the incremental ninja build).
"""

from __future__ import annotations

import glob
import os
import site
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("ops_dcnv3", "csrc")


def _locate_cuda_home() -> str | None:
    """CUDA_HOME if set, else the toolkit folder that owns a real nvcc.

    torch guesses /usr/local when nvcc on PATH is a wrapper script, so look for the
    usual toolkit folder before torch.utils.cpp_extension is imported."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    for candidate in ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]:
        if os.path.exists(os.path.join(candidate, "bin", "nvcc")):
            return candidate
    return None


def _want_cuda(cuda_home: str | None) -> bool:
    if os.environ.get("FORCE_CUDA") == "1":
        return True
    return os.environ.get("WITH_CUDA", "1") != "0" and cuda_home is not None


def _nvidia_wheel_includes() -> list[str]:
    """cuBLAS/cuSPARSE headers that torch's CUDA headers include live in the nvidia-*
    wheels next to torch, not in a bare toolkit (stack.md)."""
    roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
    found: list[str] = []
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if inc not in found:
                found.append(inc)
    return found


def _extensions():
    cuda_home = _locate_cuda_home()
    with_cuda = _want_cuda(cuda_home)
    if with_cuda and cuda_home:
        os.environ["CUDA_HOME"] = cuda_home
    try:
        import torch
    except ModuleNotFoundError:
        # The extension compiles against the torch that will run it, so torch comes first.
        sys.exit("error: PyTorch is not installed. Install it first (pip install torch==2.14.1, see "
                 "requirements/core.txt), then: pip install --no-build-isolation .")
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    # Every operator's schema file (csrc/*.cpp: DCNv3, MSDA) and CPU kernels.
    sources = sorted(glob.glob(os.path.join(CSRC, "*.cpp")))
    sources += sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    # Headers as dependencies: without --force, build_ext rebuilds only when a source or header
    # is newer than the built library, and ninja then recompiles only what changed.
    depends = sorted(glob.glob(os.path.join(CSRC, "**", "*.h"), recursive=True)
                     + glob.glob(os.path.join(CSRC, "**", "*.cuh"), recursive=True))
    # -fopenmp: at::parallel_for is a header template that only runs in parallel when
    # the extension itself is compiled with OpenMP.
    # -fno-trapping-math lets GCC if-convert (and so vectorise) the branch-free sampling
    # geometry; -fno-wrapv undoes Python's CFLAGS, which blocks index vectorisation.
    extra = {"cxx": ["-O3", "-fno-math-errno", "-fno-trapping-math", "-fno-wrapv", "-Wno-psabi",
                     "-fopenmp"]}
    if with_cuda:
        if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            # No GPU to ask: build for Ampere and Hopper (A100, H100/H200).
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        extra["nvcc"] = ["-O3", "--use_fast_math"]
        ext = CUDAExtension(
            "ops_dcnv3._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"],
            include_dirs=[os.path.join(ROOT, CSRC)] + _nvidia_wheel_includes(), depends=depends,
        )
    else:
        ext = CppExtension("ops_dcnv3._C", sources, extra_compile_args=extra, extra_link_args=["-fopenmp"],
                           include_dirs=[os.path.join(ROOT, CSRC)], depends=depends)
    print(f"ops_dcnv3: building CPU kernels{' and CUDA kernels' if with_cuda else ''}")

    class ReplacingBuildExtension(BuildExtension):
        """--inplace puts the library into the checkout by rename, not by rewriting the file:
        processes that have the old one loaded (a test run) keep a valid mapping."""

        def copy_file(self, infile, outfile, *args, **kwargs):
            partial = f"{outfile}.partial"
            _, copied = super().copy_file(infile, partial, *args, **kwargs)
            os.replace(partial, outfile)
            return outfile, copied

    return [ext], {"build_ext": ReplacingBuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="internimage",
    version="0.1.0",
    description="InternImage and the DCNv3 operator on a current PyTorch stack",
    license="MIT",
    python_requires=">=3.10",
    # mmdet_custom / mmseg_custom are top-level packages (configs import them by those
    # names through custom_imports), found inside detection/ and segmentation/.
    packages=(find_packages(include=["ops_dcnv3", "ops_dcnv3.*", "classification", "classification.*",
                                     "dense_common", "dense_common.*", "autonomous_driving",
                                     "autonomous_driving.*", "sam", "sam.*"])
              + find_packages("detection", include=["mmdet_custom", "mmdet_custom.*"])
              + find_packages("segmentation", include=["mmseg_custom", "mmseg_custom.*"])),
    package_dir={"mmdet_custom": "detection/mmdet_custom", "mmseg_custom": "segmentation/mmseg_custom"},
    package_data={"ops_dcnv3": ["csrc/*.h", "csrc/*/*.h", "csrc/*/*.cuh"],
                  "classification": ["configs/*.yaml", "configs/*/*.yaml", "configs/*/*/*.json", "*.sh",
                                     "data/map22kto1k.txt"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    zip_safe=False,
)
