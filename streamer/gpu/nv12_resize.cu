// NV12 (8-bit 4:2:0, Y plane then interleaved UV plane) -> BGR uint8, resized into a batch row, in one pass.
//
// Mirrors streamer.preprocess.resize_into, the CPU path the model was validated with:
//   - a source more than 4x the target in both directions: bilinear to 4x the target (OpenCV INTER_LINEAR
//     half-pixel centres, edge-clamped), then a 4x4 box average (INTER_AREA at an integer factor of 4);
//   - otherwise INTER_AREA straight to the target: each output pixel the area-weighted mean of the source
//     pixels its footprint covers (downscaling), bilinear where an axis is upscaled.
// Colour: Y'CbCr -> BGR with the matrix and range passed in (swscale's default, what OpenCV's FFmpeg
// decoder produces, is BT.601 limited range), chroma taken from the co-sited sample (x/2, y/2) as swscale's
// unscaled converters do; every source sample is clamped to 0..255 before it is averaged, like the CPU's
// uint8 intermediate images. One thread per output pixel.
//
// Build (the .ptx beside this file is committed; the driver JIT-compiles it for the GPU at run time):
//   nvcc -ptx -arch=compute_75 -O3 -o streamer/gpu/nv12_resize.ptx streamer/gpu/nv12_resize.cu

struct Matrix {
    float y_scale, y_offset;       // y' = (Y - y_offset) * y_scale
    float r_v, g_u, g_v, b_u;      // R = y' + r_v*V', G = y' + g_u*U' + g_v*V', B = y' + b_u*U'
};

__device__ __forceinline__ float clamp255(float v) { return fminf(fmaxf(v, 0.0f), 255.0f); }

__device__ __forceinline__ float3 bgr_at(const unsigned char* __restrict__ y_plane, int y_pitch,
                                         const unsigned char* __restrict__ uv_plane, int uv_pitch,
                                         int x, int y, const Matrix m) {
    float luma = (float(y_plane[y * y_pitch + x]) - m.y_offset) * m.y_scale;
    const unsigned char* uv = uv_plane + (y >> 1) * uv_pitch + (x & ~1);
    float u = float(uv[0]) - 128.0f;
    float v = float(uv[1]) - 128.0f;
    return make_float3(clamp255(luma + m.b_u * u), clamp255(luma + m.g_u * u + m.g_v * v),
                       clamp255(luma + m.r_v * v));
}

// OpenCV INTER_LINEAR sample at intermediate pixel (ix, iy) of a (src_w * inv_x) grid: half-pixel centres
__device__ __forceinline__ float3 bilinear(const unsigned char* __restrict__ y_plane, int y_pitch,
                                           const unsigned char* __restrict__ uv_plane, int uv_pitch,
                                           int src_w, int src_h, float fx, float fy, const Matrix m) {
    int x0 = __float2int_rd(fx), y0 = __float2int_rd(fy);
    float ax = fx - float(x0), ay = fy - float(y0);
    if (x0 < 0) { x0 = 0; ax = 0.0f; }
    if (y0 < 0) { y0 = 0; ay = 0.0f; }
    if (x0 >= src_w - 1) { x0 = src_w - 1; ax = 0.0f; }
    if (y0 >= src_h - 1) { y0 = src_h - 1; ay = 0.0f; }
    int x1 = min(x0 + 1, src_w - 1), y1 = min(y0 + 1, src_h - 1);
    float3 p00 = bgr_at(y_plane, y_pitch, uv_plane, uv_pitch, x0, y0, m);
    float3 p01 = bgr_at(y_plane, y_pitch, uv_plane, uv_pitch, x1, y0, m);
    float3 p10 = bgr_at(y_plane, y_pitch, uv_plane, uv_pitch, x0, y1, m);
    float3 p11 = bgr_at(y_plane, y_pitch, uv_plane, uv_pitch, x1, y1, m);
    float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay, w11 = ax * ay;
    // the CPU's intermediate image is uint8: round each bilinear sample
    return make_float3(rintf(p00.x * w00 + p01.x * w01 + p10.x * w10 + p11.x * w11),
                       rintf(p00.y * w00 + p01.y * w01 + p10.y * w10 + p11.y * w11),
                       rintf(p00.z * w00 + p01.z * w01 + p10.z * w10 + p11.z * w11));
}

// Weights of one axis for INTER_AREA from n_src to n_dst at output index o: [first, last] and the coverage
// of the first and last source pixel (inner ones weigh 1); all divided by the scale at the end.
struct Span { int first, last; float w_first, w_last; float scale; };

__device__ __forceinline__ Span area_span(int o, int n_src, int n_dst) {
    Span s;
    s.scale = float(n_src) / float(n_dst);
    float lo = o * s.scale, hi = (o + 1) * s.scale;
    s.first = __float2int_rd(lo);
    s.last = min(__float2int_ru(hi) - 1, n_src - 1);
    s.w_first = fminf(float(s.first + 1), hi) - lo;
    s.w_last = hi - fmaxf(float(s.last), lo);
    if (s.first == s.last) s.w_first = s.w_last = hi - lo;
    return s;
}

extern "C" __global__ void nv12_to_bgr_resize(
    const unsigned char* __restrict__ y_plane, int y_pitch,
    const unsigned char* __restrict__ uv_plane, int uv_pitch,
    int src_w, int src_h,
    unsigned char* __restrict__ out, int out_w, int out_h,
    float y_scale, float y_offset, float r_v, float g_u, float g_v, float b_u) {
    int ox = blockIdx.x * blockDim.x + threadIdx.x;
    int oy = blockIdx.y * blockDim.y + threadIdx.y;
    if (ox >= out_w || oy >= out_h) return;
    const Matrix m = {y_scale, y_offset, r_v, g_u, g_v, b_u};
    float3 acc = make_float3(0.0f, 0.0f, 0.0f);
    if (src_w > 4 * out_w && src_h > 4 * out_h) {
        // bilinear to (4*out_w, 4*out_h), then the mean of the 4x4 intermediate pixels under this output
        float sx = float(src_w) / float(4 * out_w), sy = float(src_h) / float(4 * out_h);
        for (int j = 0; j < 4; ++j) {
            float fy = (float(4 * oy + j) + 0.5f) * sy - 0.5f;
            for (int i = 0; i < 4; ++i) {
                float fx = (float(4 * ox + i) + 0.5f) * sx - 0.5f;
                float3 p = bilinear(y_plane, y_pitch, uv_plane, uv_pitch, src_w, src_h, fx, fy, m);
                acc.x += p.x; acc.y += p.y; acc.z += p.z;
            }
        }
        acc.x *= 1.0f / 16.0f; acc.y *= 1.0f / 16.0f; acc.z *= 1.0f / 16.0f;
    } else if (src_w >= out_w && src_h >= out_h) {
        Span sx = area_span(ox, src_w, out_w), sy = area_span(oy, src_h, out_h);
        for (int y = sy.first; y <= sy.last; ++y) {
            float wy = y == sy.first ? sy.w_first : (y == sy.last ? sy.w_last : 1.0f);
            for (int x = sx.first; x <= sx.last; ++x) {
                float w = wy * (x == sx.first ? sx.w_first : (x == sx.last ? sx.w_last : 1.0f));
                float3 p = bgr_at(y_plane, y_pitch, uv_plane, uv_pitch, x, y, m);
                acc.x += w * p.x; acc.y += w * p.y; acc.z += w * p.z;
            }
        }
        float norm = 1.0f / (sx.scale * sy.scale);
        acc.x *= norm; acc.y *= norm; acc.z *= norm;
    } else {
        // an axis is upscaled: bilinear at the output pixel's centre
        float fx = (float(ox) + 0.5f) * float(src_w) / float(out_w) - 0.5f;
        float fy = (float(oy) + 0.5f) * float(src_h) / float(out_h) - 0.5f;
        acc = bilinear(y_plane, y_pitch, uv_plane, uv_pitch, src_w, src_h, fx, fy, m);
    }
    unsigned char* px = out + (oy * out_w + ox) * 3;
    px[0] = (unsigned char)clamp255(rintf(acc.x));
    px[1] = (unsigned char)clamp255(rintf(acc.y));
    px[2] = (unsigned char)clamp255(rintf(acc.z));
}
