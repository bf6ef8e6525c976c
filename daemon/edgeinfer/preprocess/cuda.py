"""GPU preprocessing: one NVRTC-compiled kernel from raw uint8 BGR frames to the engine's input tensor.

Only 8-bit pixels cross the bus. Per image of a batch, the kernel letterboxes or stretches (cv2.INTER_LINEAR
reproduced bit for bit, so both paths feed the network the same pixels), reorders colours, applies
scale/mean/std, and writes NCHW or NHWC in float32, float16 or uint8 straight into the engine's input buffer.
The geometry of each image (its size, the letterbox) lives in a small parameter block uploaded with the pixels,
so the kernel's arguments never change per frame and a CUDA graph that holds the launch stays valid for frames
of any size.

An image may also already be on the GPU (`edgeinfer.frame.DeviceImage`, from a hardware decoder): then its
address and format (BGR, RGB, or NV12 converted here with OpenCV's fixed-point BT.601 coefficients, or BT.709)
go into the parameter block instead of pixels into staging, and nothing but the parameters crosses the bus. The
NV12 path computes, for each of the four taps of a sample, the BGR pixel `cv2.cvtColor(COLOR_YUV2BGR_NV12)`
would (nearest chroma sample), then interpolates them as above: the same pixels as converting on the CPU first.

The compiled code is cached per GPU architecture and variant, in memory and (when a cache folder is given) on
disk, so a restart does not compile again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..cuda import runtime as cu
from ..frame import DeviceImage
from .cpu import (
    PreprocessConfig,
    PreprocessError,
    Preprocessor,
    Transform,
    _check_image,
    fit_transform,
    normalisation_coefficients,
)

log = logging.getLogger(__name__)

# int32: src_w, src_h, src_pitch, new_w, new_h, left, top, format, src_ptr (2 words), uv_ptr (2 words), matrix,
# unused x 3. format 0: BGR in staging; 1 BGR, 2 RGB, 3 NV12 at src_ptr (device memory). matrix 0 BT.601, 1 BT.709
PARAMS_PER_IMAGE = 16
_FORMAT_CODE = {"bgr": 1, "rgb": 2, "nv12": 3}
_MATRIX_CODE = {"bt601": 0, "bt709": 1}
BLOCK = (32, 8, 1)
PIXELS_PER_THREAD = 2  # PIXELS in the kernel

KERNEL_SOURCE = r"""
// OUT_KIND: 0 float32, 1 float16 (bits in unsigned short), 2 uint8.  NCHW: 1 planar, 0 interleaved.
#if OUT_KIND == 0
typedef float out_t;
#elif OUT_KIND == 1
typedef unsigned short out_t;
#else
typedef unsigned char out_t;
#endif

__device__ __forceinline__ out_t to_out(float v) {
#if OUT_KIND == 0
    return v;
#elif OUT_KIND == 1
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
#else
    return (unsigned char)fminf(fmaxf(rintf(v), 0.0f), 255.0f);
#endif
}

// One source pixel as B, G, R integers. NV12: OpenCV's YUV420sp -> BGR (ITU-R BT.601 limited range, 20-bit
// fixed point, nearest chroma sample) bit for bit; BT.709 with the same arithmetic and its own coefficients.
__device__ __forceinline__ void fetch(int fmt, const unsigned char* __restrict__ img,
    const unsigned char* __restrict__ uv, int pitch, int x, int y, int matrix, int* bgr)
{
    if (fmt <= 1) {
        const unsigned char* p = img + (long long)y * pitch + x * 3;
        bgr[0] = __ldg(p); bgr[1] = __ldg(p + 1); bgr[2] = __ldg(p + 2);
    } else if (fmt == 2) {
        const unsigned char* p = img + (long long)y * pitch + x * 3;
        bgr[0] = __ldg(p + 2); bgr[1] = __ldg(p + 1); bgr[2] = __ldg(p);
    } else {
        const int luma = __ldg(img + (long long)y * pitch + x);
        const unsigned char* c = uv + (long long)(y >> 1) * pitch + (x & ~1);
        const int u = (int)__ldg(c) - 128, v = (int)__ldg(c + 1) - 128;
        int cy, cub, cug, cvg, cvr;
        if (matrix == 0) { cy = 1220542; cub = 2116026; cug = -409993; cvg = -852492; cvr = 1673527; }
        else { cy = 1220542; cub = 2215013; cug = -223607; cvg = -558797; cvr = 1879834; }
        const int yy = max(0, luma - 16) * cy;
        const int half = 1 << 19;
        bgr[0] = min(max((yy + half + cub * u) >> 20, 0), 255);
        bgr[1] = min(max((yy + half + cvg * v + cug * u) >> 20, 0), 255);
        bgr[2] = min(max((yy + half + cvr * v) >> 20, 0), 255);
    }
}

// One output pixel's three channels: OpenCV's INTER_LINEAR for 8-bit images reproduced bit for bit (11-bit
// fixed-point taps, the horizontal pass in integers, the vertical pass as its SIMD code rounds it), so the GPU
// path feeds the network exactly the pixels the CPU path does; then colour order and normalisation.
__device__ __forceinline__ void sample(int fmt, const unsigned char* __restrict__ img,
    const unsigned char* __restrict__ uv, int matrix, int sw, int sh, int pitch, int nw,
    int nh, int rx, int ry, const float* m, const float* a, const float* pad, int s0, int s1, int s2, float* o)
{
    if (rx < 0 || ry < 0 || rx >= nw || ry >= nh) {
        o[0] = pad[0]; o[1] = pad[1]; o[2] = pad[2];  // padding, already normalised
        return;
    }
    const double scale_x = 1.0 / ((double)nw / (double)sw), scale_y = 1.0 / ((double)nh / (double)sh);
    float fx = (float)((rx + 0.5) * scale_x - 0.5);
    int x0 = (int)floorf(fx);
    fx -= (float)x0;
    if (x0 < 0) { x0 = 0; fx = 0.f; }
    if (x0 >= sw - 1) { x0 = sw - 1; fx = 0.f; }
    float fy = (float)((ry + 0.5) * scale_y - 0.5);
    int y0 = (int)floorf(fy);
    fy -= (float)y0;  // rows are clamped below, the weights are not (as OpenCV does)
    const int ax0 = __float2int_rn((1.f - fx) * 2048.f), ax1 = __float2int_rn(fx * 2048.f);
    const int by0 = __float2int_rn((1.f - fy) * 2048.f), by1 = __float2int_rn(fy * 2048.f);
    const int x1 = min(x0 + 1, sw - 1);
    const int ya = min(max(y0, 0), sh - 1), yb = min(max(y0 + 1, 0), sh - 1);
    int p00[3], p01[3], p10[3], p11[3];
    fetch(fmt, img, uv, pitch, x0, ya, matrix, p00);
    fetch(fmt, img, uv, pitch, x1, ya, matrix, p01);
    fetch(fmt, img, uv, pitch, x0, yb, matrix, p10);
    fetch(fmt, img, uv, pitch, x1, yb, matrix, p11);
    float bgr[3];
    #pragma unroll
    for (int c = 0; c < 3; ++c) {
        const int h0 = p00[c] * ax0 + p01[c] * ax1;
        const int h1 = p10[c] * ax0 + p11[c] * ax1;
        int v = ((((h0 >> 4) * by0) >> 16) + (((h1 >> 4) * by1) >> 16) + 2) >> 2;
        bgr[c] = (float)min(max(v, 0), 255);
    }
    o[0] = bgr[s0] * m[0] + a[0]; o[1] = bgr[s1] * m[1] + a[1]; o[2] = bgr[s2] * m[2] + a[2];
}

// Each thread writes PIXELS horizontally adjacent output pixels, so a warp's stores are wide and contiguous.
#define PIXELS 2

extern "C" __global__ void edgeinfer_preprocess(
    const unsigned char* __restrict__ src, long long image_stride, const int* __restrict__ params,
    out_t* __restrict__ dst, int dst_w, int dst_h,
    float m0, float m1, float m2, float a0, float a1, float a2, float p0, float p1, float p2,
    int s0, int s1, int s2)
{
    const int x = (blockIdx.x * blockDim.x + threadIdx.x) * PIXELS;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (x >= dst_w || y >= dst_h) return;
    const int* p = params + b * 16;
    const int sw = p[0], sh = p[1], pitch = p[2], nw = p[3], nh = p[4], left = p[5], top = p[6], fmt = p[7];
    const unsigned char* img = fmt == 0 ? src + (long long)b * image_stride
        : (const unsigned char*)(((unsigned long long)(unsigned)p[9] << 32) | (unsigned)p[8]);
    const unsigned char* uv = (const unsigned char*)(((unsigned long long)(unsigned)p[11] << 32) | (unsigned)p[10]);
    const int matrix = p[12];
    const float m[3] = {m0, m1, m2}, a[3] = {a0, a1, a2}, pad[3] = {p0, p1, p2};
    float o[PIXELS][3];
    #pragma unroll
    for (int k = 0; k < PIXELS; ++k)
        sample(fmt, img, uv, matrix, sw, sh, pitch, nw, nh, x + k - left, y - top, m, a, pad, s0, s1, s2, o[k]);
    const bool full = x + PIXELS <= dst_w;
#if NCHW
    const long long plane = (long long)dst_w * dst_h;
    out_t* d = dst + (long long)b * 3 * plane + (long long)y * dst_w + x;
#if PIXELS == 2
    if (full && (dst_w & 1) == 0) {  // x is even and so is every plane offset: one aligned store per plane
        #pragma unroll
        for (int c = 0; c < 3; ++c) {
#if OUT_KIND == 0
            *reinterpret_cast<unsigned long long*>(d + c * plane) =
                (unsigned long long)__float_as_uint(o[0][c]) | ((unsigned long long)__float_as_uint(o[1][c]) << 32);
#elif OUT_KIND == 1
            *reinterpret_cast<unsigned int*>(d + c * plane) =
                (unsigned int)to_out(o[0][c]) | ((unsigned int)to_out(o[1][c]) << 16);
#else
            *reinterpret_cast<unsigned short*>(d + c * plane) =
                (unsigned short)(to_out(o[0][c]) | (to_out(o[1][c]) << 8));
#endif
        }
        return;
    }
#endif
    #pragma unroll
    for (int c = 0; c < 3; ++c) {
        #pragma unroll
        for (int k = 0; k < PIXELS; ++k)
            if (full || k == 0) d[c * plane + k] = to_out(o[k][c]);
    }
#else
    out_t* d = dst + (((long long)b * dst_h + y) * dst_w + x) * 3;
    #pragma unroll
    for (int k = 0; k < PIXELS; ++k)
        if (full || k == 0) {
            d[3 * k] = to_out(o[k][0]); d[3 * k + 1] = to_out(o[k][1]); d[3 * k + 2] = to_out(o[k][2]);
        }
#endif
}
"""

_OUT_KIND = {"float32": 0, "float16": 1, "uint8": 2}
_cache_lock = threading.Lock()
_compiled: dict[tuple[str, int, int], bytes] = {}


def compile_kernel(arch: str, out_kind: int, nchw: bool, cache_dir: Path | None = None) -> bytes:
    """CUBIN of the preprocessing kernel for `arch` (e.g. sm_90), from memory, the disk cache, or NVRTC."""
    key = (arch, out_kind, int(nchw))
    with _cache_lock:
        cubin = _compiled.get(key)
        if cubin is not None:
            return cubin
        digest = hashlib.sha256(KERNEL_SOURCE.encode()).hexdigest()[:16]
        cached = cache_dir / f"preprocess-{digest}-{arch}-k{out_kind}-{'nchw' if nchw else 'nhwc'}.cubin" \
            if cache_dir is not None else None
        if cached is not None and cached.is_file():
            cubin = cached.read_bytes()
        else:
            cubin = _nvrtc_compile(arch, [f"-DOUT_KIND={out_kind}", f"-DNCHW={int(nchw)}"])
            if cached is not None:
                try:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_bytes(cubin)
                    tmp.replace(cached)
                except OSError as exc:  # a read-only cache folder costs a compile per start, nothing more
                    log.debug("cannot cache the preprocessing kernel in %s: %s", cache_dir, exc)
        _compiled[key] = cubin
        return cubin


def _nvrtc_compile(arch: str, defines: list[str]) -> bytes:
    nvrtc = cu.nvrtc()
    prog = cu.check(nvrtc.nvrtcCreateProgram(KERNEL_SOURCE.encode(), b"edgeinfer_preprocess.cu", 0, [], []),
                    "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"-default-device", b"--fmad=false", b"-std=c++14",
                *(d.encode() for d in defines)]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            size = cu.check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            text = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, text)
            raise cu.CudaError("nvrtcCompileProgram", err, text.decode(errors="replace").strip())
        size = cu.check(nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        cu.check(nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return bytes(cubin)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class PreprocessKernel:
    """The loaded kernel for one output variant; `launch` enqueues it for n images on a stream."""

    def __init__(self, config: PreprocessConfig, dtype: np.dtype, arch: str, cache_dir: Path | None = None):
        drv = cu.driver()
        self.config = config
        self.nchw = config.layout == "nchw"
        cubin = compile_kernel(arch, _OUT_KIND[np.dtype(dtype).name], self.nchw, cache_dir)
        self._cubin = cubin  # keep the image alive while the module is loaded
        self.module = cu.check(drv.cuModuleLoadData(cubin), "cuModuleLoadData")
        self.function = cu.check(drv.cuModuleGetFunction(self.module, b"edgeinfer_preprocess"),
                                 "cuModuleGetFunction")
        multiply, add = normalisation_coefficients(config)
        if np.dtype(dtype) == np.uint8:
            multiply, add = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)
        pad = [config.pad_value * m + a for m, a in zip(multiply, add)]
        source_channel = (2, 1, 0) if config.color == "rgb" else (0, 1, 2)
        self._constants = (*multiply, *add, *pad, *source_channel)

    def arguments(self, src_ptr: int, image_stride: int, params_ptr: int, dst_ptr: int, dst_w: int, dst_h: int
                  ) -> tuple[np.ndarray, list[np.ndarray]]:
        """The kernelParams block for fixed buffers: built once per buffer set, reused for every launch."""
        values = [np.array([src_ptr], np.uint64), np.array([image_stride], np.int64),
                  np.array([params_ptr], np.uint64), np.array([dst_ptr], np.uint64),
                  np.array([dst_w], np.int32), np.array([dst_h], np.int32)]
        values += [np.array([v], np.float32) for v in self._constants[:9]]
        values += [np.array([v], np.int32) for v in self._constants[9:]]
        pointers = np.array([v.ctypes.data for v in values], np.uint64)
        return pointers, values  # `values` must outlive every launch that uses `pointers`

    def launch(self, arguments: np.ndarray, dst_w: int, dst_h: int, n: int, stream: cu.Stream) -> None:
        drv = cu.driver()
        per_block = BLOCK[0] * PIXELS_PER_THREAD
        grid = ((dst_w + per_block - 1) // per_block, (dst_h + BLOCK[1] - 1) // BLOCK[1], n)
        cu.check(drv.cuLaunchKernel(self.function, *grid, *BLOCK, 0, stream.driver_handle, arguments.ctypes.data,
                                    0), "cuLaunchKernel(edgeinfer_preprocess)")

    def close(self) -> None:
        if self.module is not None:
            cu.driver().cuModuleUnload(self.module)
            self.module = None


class _StagingSet:
    """One buffer set's raw frames: pinned (optionally mapped) host memory, a device copy, the parameters."""

    def __init__(self, batch: int, image_bytes: int, mapped: bool):
        self.image_bytes = image_bytes
        self.host = cu.HostBuffer((batch * image_bytes,), np.uint8, mapped=mapped)
        self.params = cu.HostBuffer((batch, PARAMS_PER_IMAGE), np.int32, mapped=mapped)
        self.device = None if mapped else cu.DeviceBuffer(batch * image_bytes)
        self.device_params = None if mapped else cu.DeviceBuffer(self.params.nbytes)
        self.used = [0] * batch  # bytes of each image written into staging (0: the image is on the device)
        self.ready: list[Any] = [None] * batch  # device images: the event to wait on before the kernel reads
        self.keep: list[Any] = [None] * batch  # device images: referenced until the set is written again

    @property
    def src_ptr(self) -> int:
        return self.host.device_ptr if self.device is None else self.device.ptr

    @property
    def params_ptr(self) -> int:
        return self.params.device_ptr if self.device_params is None else self.device_params.ptr

    def close(self) -> None:
        for buf in (self.host, self.params, self.device, self.device_params):
            if buf is not None:
                buf.close()


class GpuInputStage:
    """Raw frames into pinned staging (prepare thread); upload + kernel into the engine's input (infer thread).

    `sets` buffer sets, each with its own staging and its own destination (`dst_ptrs[set]`, the engine input
    of that set). A set's staging grows to the largest frame written into it (only that set, which is not in
    flight while it is written); its `generation[set]` changes then, so that a CUDA graph captured over the old
    buffers is captured again.
    """

    def __init__(self, config: PreprocessConfig, input_shape: tuple[Any, ...], dtype: Any, sets: int,
                 dst_ptrs: list[int], arch: str, mapped: bool, fixed_batch: bool,
                 cache_dir: Path | None = None, initial_size: tuple[int, int] = (1080, 1920)):
        # Reuse the CPU stage's checks of config against the input (shape, layout, dtype, size)
        shape_check = Preprocessor._resolve_shape(config, tuple(input_shape))
        self.dtype = Preprocessor._resolve_dtype(config, dtype)
        self.batch, self.height, self.width = shape_check
        self.sets = sets
        self.fixed_batch = fixed_batch
        self.config = config
        self.mapped = mapped
        self.kernel = PreprocessKernel(config, self.dtype, arch, cache_dir)
        self._dst_ptrs = list(dst_ptrs)
        self._transforms: dict[tuple[int, int], Transform] = {}
        image_bytes = initial_size[0] * initial_size[1] * 3
        self._staging = [_StagingSet(self.batch, image_bytes, mapped) for _ in range(sets)]
        self._arguments = [self._build_arguments(i) for i in range(sets)]
        self.generation = [0] * sets
        self.device_index: int | None = None  # set by the backend: device images on this GPU are read in place

    @property
    def input_size(self) -> tuple[int, int]:
        return self.height, self.width

    def _build_arguments(self, set_index: int):
        st = self._staging[set_index]
        return self.kernel.arguments(st.src_ptr, st.image_bytes, st.params_ptr, self._dst_ptrs[set_index],
                                     self.width, self.height)

    def _grow(self, set_index: int, image_bytes: int) -> None:
        # rare (a larger source appeared); the set is not in flight while the prepare thread writes it
        self._staging[set_index].close()
        self._staging[set_index] = _StagingSet(self.batch, image_bytes, self.mapped)
        self._arguments[set_index] = self._build_arguments(set_index)
        self.generation[set_index] += 1

    def _transform(self, w: int, h: int) -> Transform:
        transform = self._transforms.get((h, w))
        if transform is None:
            transform = fit_transform(w, h, self.width, self.height, self.config.resize)
            if len(self._transforms) > 16:
                self._transforms.clear()
            self._transforms[(h, w)] = transform
        return transform

    def write(self, set_index: int, item: int, image: np.ndarray | DeviceImage) -> Transform:
        """Copy one BGR frame into the set's pinned staging and its geometry into the parameters; a device
        image (already on this GPU) is read where it is: only its address and format go into the parameters."""
        if isinstance(image, DeviceImage):
            return self._write_device(set_index, item, image)
        _check_image(image)
        h, w = image.shape[:2]
        nbytes = h * w * 3
        if nbytes > self._staging[set_index].image_bytes:
            self._grow(set_index, nbytes)
        transform = self._transform(w, h)
        st = self._staging[set_index]
        start = item * st.image_bytes
        np.copyto(st.host.array[start:start + nbytes].reshape(h, w, 3), image)
        new_w, new_h = transform.resized_size
        st.params.array[item] = (w, h, w * 3, new_w, new_h, int(transform.pad_x), int(transform.pad_y), 0,
                                 0, 0, 0, 0, 0, 0, 0, 0)
        st.used[item] = nbytes
        st.ready[item] = st.keep[item] = None
        return transform

    def _write_device(self, set_index: int, item: int, image: DeviceImage) -> Transform:
        if image.format not in _FORMAT_CODE:
            raise PreprocessError(f"device image format {image.format!r} is not one of {', '.join(_FORMAT_CODE)}")
        if image.width < 1 or image.height < 2:
            raise PreprocessError(f"device image of {image.width}x{image.height} pixels")
        transform = self._transform(image.width, image.height)
        st = self._staging[set_index]
        new_w, new_h = transform.resized_size
        words = np.array([image.ptr, image.uv_ptr], np.uint64).view(np.int32)
        st.params.array[item] = (image.width, image.height, image.pitch, new_w, new_h, int(transform.pad_x),
                                 int(transform.pad_y), _FORMAT_CODE[image.format], *words,
                                 _MATRIX_CODE.get(image.matrix, 0), 0, 0, 0)
        st.used[item] = 0
        st.ready[item] = image.ready
        st.keep[item] = image  # the pipeline holds the frame too; this covers direct users of the stage
        return transform

    def enqueue_upload(self, set_index: int, n: int, stream: cu.Stream) -> None:
        """H2D of the n images and their parameters (nothing to copy with mapped memory); for device images,
        the stream waits for their producer's event instead."""
        st = self._staging[set_index]
        for item in range(n):
            if st.ready[item] is not None:
                stream.wait(st.ready[item])
        if st.device is None:
            return
        cu.copy_async(st.device_params.ptr, st.params.ptr, n * PARAMS_PER_IMAGE * 4, "h2d", stream)
        for item in range(n):
            if st.used[item]:
                offset = item * st.image_bytes
                cu.copy_async(st.device.ptr + offset, st.host.ptr + offset, st.used[item], "h2d", stream)

    def enqueue_kernel(self, set_index: int, n: int, stream: cu.Stream) -> None:
        pointers, _values = self._arguments[set_index]
        self.kernel.launch(pointers, self.width, self.height, n, stream)

    def close(self) -> None:
        for st in self._staging:
            st.close()
        self._staging = []
        self.kernel.close()
