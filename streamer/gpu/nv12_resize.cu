// NV12 (8-bit 4:2:0, Y plane then interleaved UV plane) -> BGR uint8, resized into a batch row, in one pass,
// bit-exact with the CPU path the model was validated with: OpenCV's FFmpeg decode (swscale yuv420p -> bgr24)
// followed by streamer.preprocess.resize_into (cv2.resize). One thread per output pixel. Measured with
// tools/nv12_match.py (OpenCV 5.0, swscale 9.5): every byte equal on real footage at every size tried.
//
// What is reproduced, and why each step is integer or explicitly rounded:
//   - Colour: swscale's unscaled x86 yuv2rgb (ff_yuv_420_bgr24_ssse3), which OpenCV's decoder runs for yuv420p
//     of even height: 16-bit fixed point, Y/U/V shifted left by 3, offsets subtracted, each term a pmulhw
//     ((a * b) >> 16, floored), summed, saturated to 0..255. Chroma from the co-sited sample (x/2, y/2). The six
//     int16 coefficients come from the colour matrix exactly as swscale derives them (nv12.py, ColorMatrix).
//   - A frame more than 4x the target in both directions: cv2.resize INTER_LINEAR to 4x the target, then
//     INTER_AREA by exactly 4. INTER_LINEAR on uint8: source positions computed in double then float as OpenCV
//     does, 11-bit weights rounded half to even, horizontal pass exact in int, vertical pass as OpenCV's SIMD
//     code does it: ((h0 >> 4) * b0 >> 16) + ((h1 >> 4) * b1 >> 16), + 2, >> 2. INTER_AREA by an integer
//     factor (OpenCV's fast path): the block sum times float(1/area) rounded half to even; (sum + 2) >> 2 at
//     exactly 2x2 (its SIMD path), which is also what INTER_LINEAR at exactly 2x gives.
//   - Otherwise INTER_AREA straight: the fast path above when both factors are integers (double arithmetic
//     decides, as in OpenCV), else OpenCV's general area resampler: float weights from double arithmetic, a
//     float accumulation in OpenCV's order (each source row across, then rows down), rounded half to even.
//   - An axis upscaled: INTER_AREA falls back to OpenCV's linear resampler with its "area" weights.
// Double/float steps use the _rn intrinsics so that nvcc cannot fuse them into FMAs (x86 does not either).
// Not reproduced: swscale's other paths (odd frame height, yuvj420p full-range streams), which OpenCV's decoder
// takes through the generic scaler (chroma interpolated vertically, other rounding).
//
// Build (the .ptx beside this file is committed; the driver JIT-compiles it for the GPU at run time):
//   nvcc -ptx -arch=compute_75 -O3 -o streamer/gpu/nv12_resize.ptx streamer/gpu/nv12_resize.cu

#define MAX_BATCH_FRAMES 64
#define DBL_EPSILON_ 2.220446049250313e-16

struct FrameBatch {
    unsigned long long y[MAX_BATCH_FRAMES];
    unsigned long long uv[MAX_BATCH_FRAMES];
    unsigned long long out[MAX_BATCH_FRAMES];
};

// Rows of a batch, each copied from where it was made into the batch's input (copy_rows)
struct RowCopies {
    unsigned long long src[MAX_BATCH_FRAMES];
    unsigned long long dst[MAX_BATCH_FRAMES];
};

// swscale's int16 yuv2rgb coefficients (scaled by 2^13) and luma offset (scaled by 2^3)
struct Yuv2Bgr { int y_coeff, y_offset, v2r, u2g, v2g, u2b; };

struct Nv12 {
    const unsigned char* __restrict__ y;
    const unsigned char* __restrict__ uv;
    int y_pitch, uv_pitch, w, h;
};

__device__ __forceinline__ int mulhi16(int a, int b) { return (a * b) >> 16; }  // pmulhw
__device__ __forceinline__ int clamp_u8(int v) { return min(max(v, 0), 255); }

__device__ __forceinline__ int3 bgr_at(const Nv12& s, int x, int y, const Yuv2Bgr& m) {
    int luma = mulhi16(int(s.y[y * s.y_pitch + x]) * 8 - m.y_offset, m.y_coeff);
    const unsigned char* c = s.uv + (y >> 1) * s.uv_pitch + (x & ~1);
    int u = int(c[0]) * 8 - 1024, v = int(c[1]) * 8 - 1024;
    return make_int3(clamp_u8(luma + mulhi16(u, m.u2b)),
                     clamp_u8(luma + (mulhi16(u, m.u2g) + mulhi16(v, m.v2g))),
                     clamp_u8(luma + mulhi16(v, m.v2r)));
}

// OpenCV's scale for an axis: 1 / (n_dst / n_src), in double
__device__ __forceinline__ double axis_scale(int n_src, int n_dst) {
    return __ddiv_rn(1.0, __ddiv_rn(double(n_dst), double(n_src)));
}

// One axis of cv::resize's linear resampler (resizeGeneric_, fixed point for uint8): the two source indices and
// their 11-bit weights for output index d. area_mode: INTER_AREA's weights when the frame is upscaled.
struct LinearTap { int s0, s1, a0, a1; };

__device__ __forceinline__ LinearTap linear_tap(int d, int n_src, int n_dst, bool area_mode) {
    double inv_scale = __ddiv_rn(double(n_dst), double(n_src));
    double scale = __ddiv_rn(1.0, inv_scale);
    int s;
    float f;
    if (!area_mode) {
        f = __double2float_rn(__dadd_rn(__dmul_rn(double(d) + 0.5, scale), -0.5));
        s = int(floorf(f));
        f = __fsub_rn(f, float(s));
    } else {
        s = int(floor(__dmul_rn(double(d), scale)));
        f = __double2float_rn(__dsub_rn(double(d + 1), __dmul_rn(double(s + 1), inv_scale)));
        f = f <= 0.0f ? 0.0f : __fsub_rn(f, floorf(f));
    }
    if (s < 0) { f = 0.0f; s = 0; }
    if (s >= n_src - 1) { f = 0.0f; s = n_src - 1; }
    LinearTap t;
    t.s0 = s;
    t.s1 = min(s + 1, n_src - 1);
    t.a0 = __float2int_rn(__fmul_rn(__fsub_rn(1.0f, f), 2048.0f));
    t.a1 = __float2int_rn(__fmul_rn(f, 2048.0f));
    return t;
}

// OpenCV's vertical linear pass on uint8 (VResizeLinearVec_32s8u): 16-bit multiply-high, then (t + 2) >> 2
__device__ __forceinline__ int vertical(int h0, int h1, int b0, int b1) {
    return clamp_u8((mulhi16(h0 >> 4, b0) + mulhi16(h1 >> 4, b1) + 2) >> 2);
}

__device__ __forceinline__ int3 linear_sample(const Nv12& s, const LinearTap& tx, const LinearTap& ty,
                                              const Yuv2Bgr& m) {
    int3 p00 = bgr_at(s, tx.s0, ty.s0, m), p01 = bgr_at(s, tx.s1, ty.s0, m);
    int3 p10 = bgr_at(s, tx.s0, ty.s1, m), p11 = bgr_at(s, tx.s1, ty.s1, m);
    return make_int3(vertical(p00.x * tx.a0 + p01.x * tx.a1, p10.x * tx.a0 + p11.x * tx.a1, ty.a0, ty.a1),
                     vertical(p00.y * tx.a0 + p01.y * tx.a1, p10.y * tx.a0 + p11.y * tx.a1, ty.a0, ty.a1),
                     vertical(p00.z * tx.a0 + p01.z * tx.a1, p10.z * tx.a0 + p11.z * tx.a1, ty.a0, ty.a1));
}

// INTER_AREA's integer factor for an axis (cv::resize's is_area_fast test), or 0 when it is not one
__device__ __forceinline__ int area_fast_factor(int n_src, int n_dst) {
    double scale = axis_scale(n_src, n_dst);
    int i = __double2int_rn(scale);
    return fabs(__dsub_rn(scale, double(i))) < DBL_EPSILON_ ? i : 0;
}

// resizeAreaFast_: a block's sum -> the output value
__device__ __forceinline__ int area_fast_round(int sum, int fx, int fy) {
    if (fx == 2 && fy == 2) return (sum + 2) >> 2;
    return clamp_u8(__float2int_rn(__fmul_rn(float(sum), __fdiv_rn(1.0f, float(fx * fy)))));
}

// computeResizeAreaTab for output index d: taps [first, last], a partial head and/or tail weight, the rest w_mid
struct AreaSpan { int first, last; float w_head, w_mid, w_tail; bool head, tail; };

__device__ __forceinline__ AreaSpan area_span(int d, int n_src, int n_dst) {
    double scale = axis_scale(n_src, n_dst);
    double fs1 = __dmul_rn(double(d), scale), fs2 = __dadd_rn(fs1, scale);
    double cell = fmin(scale, __dsub_rn(double(n_src), fs1));
    int s1 = int(ceil(fs1)), s2 = min(int(floor(fs2)), n_src - 1);
    s1 = min(s1, s2);
    AreaSpan a;
    a.head = __dsub_rn(double(s1), fs1) > 1e-3;
    a.tail = __dsub_rn(fs2, double(s2)) > 1e-3;
    a.w_head = __double2float_rn(__ddiv_rn(__dsub_rn(double(s1), fs1), cell));
    a.w_mid = __double2float_rn(__ddiv_rn(1.0, cell));
    a.w_tail = __double2float_rn(__ddiv_rn(fmin(fmin(__dsub_rn(fs2, double(s2)), 1.0), cell), cell));
    a.first = a.head ? s1 - 1 : s1;
    a.last = a.tail ? s2 : s2 - 1;
    return a;
}

__device__ __forceinline__ float area_weight(const AreaSpan& a, int i) {
    return (a.head && i == a.first) ? a.w_head : ((a.tail && i == a.last) ? a.w_tail : a.w_mid);
}

// What resize_into writes at output pixel (ox, oy)
__device__ int3 resize_pixel(const Nv12& s, int ox, int oy, int out_w, int out_h, const Yuv2Bgr& m) {
    if (s.w == out_w && s.h == out_h) return bgr_at(s, ox, oy, m);
    if (s.w > 4 * out_w && s.h > 4 * out_h) {
        // INTER_LINEAR to (4*out_w, 4*out_h), then INTER_AREA's fast path over the 4x4 intermediate pixels
        LinearTap tx[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) tx[i] = linear_tap(4 * ox + i, s.w, 4 * out_w, false);
        int3 sum = make_int3(0, 0, 0);
        for (int j = 0; j < 4; ++j) {
            const LinearTap ty = linear_tap(4 * oy + j, s.h, 4 * out_h, false);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                int3 p = linear_sample(s, tx[i], ty, m);
                sum.x += p.x; sum.y += p.y; sum.z += p.z;
            }
        }
        return make_int3(area_fast_round(sum.x, 4, 4), area_fast_round(sum.y, 4, 4), area_fast_round(sum.z, 4, 4));
    }
    if (s.w >= out_w && s.h >= out_h) {
        int fx = area_fast_factor(s.w, out_w), fy = area_fast_factor(s.h, out_h);
        if (fx && fy) {
            int3 sum = make_int3(0, 0, 0);
            for (int y = oy * fy; y < (oy + 1) * fy; ++y)
                for (int x = ox * fx; x < (ox + 1) * fx; ++x) {
                    int3 p = bgr_at(s, x, y, m);
                    sum.x += p.x; sum.y += p.y; sum.z += p.z;
                }
            return make_int3(area_fast_round(sum.x, fx, fy), area_fast_round(sum.y, fx, fy),
                             area_fast_round(sum.z, fx, fy));
        }
        AreaSpan ax = area_span(ox, s.w, out_w), ay = area_span(oy, s.h, out_h);
        float3 acc = make_float3(0.0f, 0.0f, 0.0f);
        for (int y = ay.first; y <= ay.last; ++y) {
            float3 row = make_float3(0.0f, 0.0f, 0.0f);
            for (int x = ax.first; x <= ax.last; ++x) {
                float w = area_weight(ax, x);
                int3 p = bgr_at(s, x, y, m);
                row.x = __fadd_rn(row.x, __fmul_rn(float(p.x), w));
                row.y = __fadd_rn(row.y, __fmul_rn(float(p.y), w));
                row.z = __fadd_rn(row.z, __fmul_rn(float(p.z), w));
            }
            float w = area_weight(ay, y);
            acc.x = __fadd_rn(acc.x, __fmul_rn(w, row.x));
            acc.y = __fadd_rn(acc.y, __fmul_rn(w, row.y));
            acc.z = __fadd_rn(acc.z, __fmul_rn(w, row.z));
        }
        return make_int3(clamp_u8(__float2int_rn(acc.x)), clamp_u8(__float2int_rn(acc.y)),
                         clamp_u8(__float2int_rn(acc.z)));
    }
    return linear_sample(s, linear_tap(ox, s.w, out_w, true), linear_tap(oy, s.h, out_h, true), m);
}

// The per-pixel work of both entry points: this thread's output pixel of one frame
__device__ __forceinline__ void convert_pixel(const Nv12& s, unsigned char* __restrict__ out, int out_w,
                                              int out_h, const Yuv2Bgr& m) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    int3 p = resize_pixel(s, ox, oy, out_w, out_h, m);
    unsigned char* px = out + (oy * out_w + ox) * 3;
    px[0] = (unsigned char)p.x;
    px[1] = (unsigned char)p.y;
    px[2] = (unsigned char)p.z;
}

// One frame: grid (ceil(out_w/16), ceil(out_h/8)), block (16, 8)
extern "C" __global__ void nv12_to_bgr_resize(
    const unsigned char* __restrict__ y_plane, int y_pitch,
    const unsigned char* __restrict__ uv_plane, int uv_pitch,
    int src_w, int src_h,
    unsigned char* __restrict__ out, int out_w, int out_h,
    int y_coeff, int y_offset, int v2r, int u2g, int v2g, int u2b) {
    const Nv12 s = {y_plane, uv_plane, y_pitch, uv_pitch, src_w, src_h};
    const Yuv2Bgr m = {y_coeff, y_offset, v2r, u2g, v2g, u2b};
    convert_pixel(s, out, out_w, out_h, m);
}

// Frames of one size and pitch: grid (ceil(out_w/16), ceil(out_h/8), n_frames), block (16, 8, 1); frame
// blockIdx.z reads y[z], uv[z] and writes out[z]
extern "C" __global__ void nv12_to_bgr_resize_batch(
    FrameBatch batch, int y_pitch, int uv_pitch, int src_w, int src_h, int out_w, int out_h,
    int y_coeff, int y_offset, int v2r, int u2g, int v2g, int u2b) {
    const int z = blockIdx.z;
    const Nv12 s = {(const unsigned char*)batch.y[z], (const unsigned char*)batch.uv[z], y_pitch, uv_pitch,
                    src_w, src_h};
    const Yuv2Bgr m = {y_coeff, y_offset, v2r, u2g, v2g, u2b};
    convert_pixel(s, (unsigned char*)batch.out[z], out_w, out_h, m);
}

// Model-input rows gathered into a batch: row blockIdx.y copies row_bytes from src[y] to dst[y]. Grid (x, n_rows),
// block (256); 16 bytes per thread step when both addresses and the length allow it, else bytes.
extern "C" __global__ void copy_rows(RowCopies rows, int row_bytes) {
    const unsigned long long src = rows.src[blockIdx.y], dst = rows.dst[blockIdx.y];
    const int stride = blockDim.x * gridDim.x;
    const int first = blockIdx.x * blockDim.x + threadIdx.x;
    if (((src | dst | (unsigned long long)row_bytes) & 15) == 0) {
        const uint4* __restrict__ s = (const uint4*)src;
        uint4* __restrict__ d = (uint4*)dst;
        for (int i = first; i < row_bytes / 16; i += stride) d[i] = s[i];
    } else {
        const unsigned char* __restrict__ s = (const unsigned char*)src;
        unsigned char* __restrict__ d = (unsigned char*)dst;
        for (int i = first; i < row_bytes; i += stride) d[i] = s[i];
    }
}
