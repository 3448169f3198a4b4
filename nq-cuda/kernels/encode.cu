// The encode pipeline of one kv head on the device: gather kept f16 rows, center, smooth,
// randomized Hadamard rotation, per-row f16 scale, fixed-rate E8 codes (2, 3, 4 bits).
//
// A port of nq-lattice's encoder (e8p.rs, e81b.rs, fixed.rs `encode_group`, scale.rs
// `encode_fixed`) and nq-hadamard's butterflies, operation for operation, compiled with
// --fmad=false: every f32/f64 operation rounds as on the CPU, so the codes and scales equal
// the CPU's bit for bit (the CPU kernels never fuse multiply-adds either, lanes.rs).
//
// Layout: a row of d values (d a multiple of 8, 8 <= d <= 256) is handled by a group of G
// lanes of one warp (G = 8, 16 or 32, the next power of two >= d / 8): lane t owns the
// 8-block t (values 8t..8t+8) in registers. Butterflies of stride 1, 2, 4 run inside a lane,
// strides 8..4G across lanes by shuffles, in ascending stride as nq-hadamard does (so the
// rotation is bit-identical too). Sums whose order the CPU fixes (the row's sum of squares,
// the best-of refit) run sequentially over shared memory in the CPU's order.
//
// Errors are reported through `status` (three u64, initialised to ~0 by the host):
//   status[0] = min over non-finite prepared values of (flat index << 32 | f32 bits)
//   status[1] = min over overflowing scales of (row << 32 | f32 bits of the scale)
//   status[2] = min over kept indices out of range of (index << 32 | the head's row count)

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define FULL 0xffffffffu
#define THREADS 256
// Scales below this are stored as 0 (half the smallest positive f16): scale.rs `TINY`.
#define TINY (1.0f / 33554432.0f)

// f16 <-> f32 by the PTX conversions on the device; the portable versions (round to
// nearest even, subnormals kept) let the device functions also be compiled for the host.
__device__ __forceinline__ float half_to_float(u16 h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const u32 sign = (u32)(h & 0x8000u) << 16;
    const u32 e = (h >> 10) & 0x1fu;
    const u32 m = h & 0x3ffu;
    float v;
    if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
    if (e == 0) v = (float)m * (1.0f / 16777216.0f);  // subnormal: m * 2^-24 (exact)
    else v = __uint_as_float(((e + 112u) << 23) | (m << 13));
    return __uint_as_float(__float_as_uint(v) | sign);
#endif
}

__device__ __forceinline__ u16 float_to_half(float f) {
#ifdef __CUDA_ARCH__
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const u32 x = __float_as_uint(f);
    const u16 sign = (u16)((x >> 16) & 0x8000u);
    const u32 ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return sign | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);
    if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520: infinity
    if (ax < 0x38800000u) {                        // below 2^-14: subnormal or zero
        if (ax < 0x33000000u) return sign;         // below 2^-25: rounds to 0 (tie to even)
        const u32 e = ax >> 23;
        const u32 m = (ax & 0x7fffffu) | 0x800000u;
        const u32 shift = 126u - e;                // m * 2^(e-150) in units of 2^-24
        const u32 q = m >> shift;
        const u32 rem = m & ((1u << shift) - 1u);
        const u32 half = 1u << (shift - 1u);
        const u32 r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
        return sign | (u16)r;
    }
    const u32 q = (ax - 0x38000000u) >> 13;         // rebias 127 -> 15, drop 13 bits
    const u32 rem = ax & 0x1fffu;
    const u32 r = q + ((rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ? 1u : 0u);
    return sign | (u16)r;
#endif
}

// 16 bytes (8 f16 values), for one vector load.
struct alignas(16) U4 { u32 a, b, c, d; };

// |x| by clearing the sign bit (as Rust's f32::abs), with no math library.
__device__ __forceinline__ float abs_f(float x) { return __uint_as_float(__float_as_uint(x) & 0x7fffffffu); }

// x86 maxps/minps semantics, as lanes.rs defines max/min.
__device__ __forceinline__ float max_x86(float a, float b) { return a > b ? a : b; }
__device__ __forceinline__ float min_x86(float a, float b) { return a < b ? a : b; }

// Larger / smaller of two non-negative, non-NaN floats (absolute values of finite data): one
// max.f32 / min.f32 instead of a compare and a select. Equal to max_x86 / min_x86 there:
// the two differ only for a NaN or for -0 against +0, and |x| is never -0.
__device__ __forceinline__ float max_abs(float a, float b) {
#ifdef __CUDA_ARCH__
    float r;
    asm("max.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
#else
    return max_x86(a, b);
#endif
}

__device__ __forceinline__ float min_abs(float a, float b) {
#ifdef __CUDA_ARCH__
    float r;
    asm("min.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
#else
    return min_x86(a, b);
#endif
}

// e8p.rs `sort8`: decreasing, the same 19-comparator network, on absolute values (both
// callers sort |t| or |r|).
__device__ __forceinline__ void sort8(float w[8]) {
#define CAS(a, b) { const float hi = max_abs(w[a], w[b]); const float lo = min_abs(w[a], w[b]); w[a] = hi; w[b] = lo; }
    CAS(0, 2) CAS(1, 3) CAS(4, 6) CAS(5, 7) CAS(0, 4) CAS(1, 5) CAS(2, 6) CAS(3, 7) CAS(0, 1)
    CAS(2, 3) CAS(4, 5) CAS(6, 7) CAS(2, 4) CAS(3, 5) CAS(1, 4) CAS(3, 6) CAS(1, 2) CAS(3, 4)
    CAS(5, 6)
#undef CAS
}

__device__ __forceinline__ bool strictly_decreasing(const float s[8]) {
    bool m = true;
#pragma unroll
    for (int k = 0; k < 7; ++k) m = m && (s[k + 1] < s[k]);
    return m;
}

// e8p.rs `ranks`: rank in decreasing order, ties by position (lower index first).
__device__ __forceinline__ void ranks(const float w[8], int rank[8]) {
#pragma unroll
    for (int j = 0; j < 8; ++j) rank[j] = j;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = i + 1; j < 8; ++j) {
            const int inc = w[i] < w[j] ? 1 : 0;
            rank[i] += inc;
            rank[j] -= inc;
        }
    }
}

// One shift's nearest E8P codeword before assignment (e8p.rs `Scored`).
struct Scored {
    float t[8];
    float srt[8];
    float cost;
    float u3, u5;
    int n3, n5;
    bool fix;
};

// e8p.rs `score_shift`.
__device__ __forceinline__ Scored score_shift(const float v[8], bool up) {
    Scored S;
    const float s = up ? 0.25f : -0.25f;
    bool odd = false;
    float base = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        S.t[i] = v[i] - s;
        const float w = abs_f(S.t[i]);
        S.srt[i] = w;
        odd = odd != (S.t[i] < 0.0f);
        const float ww = w * w;
        base = base + (ww - w);
    }
    sort8(S.srt);
    float pre[9];
    pre[0] = 0.0f;
#pragma unroll
    for (int r = 0; r < 8; ++r) pre[r + 1] = pre[r] + S.srt[r];
    const bool even = !odd;
    float best = __int_as_float(0x7f800000);
    int bt = 0;
    // e8p.rs `TYPES`, in order: (n3, n5, squared norm, sum parity, smallest value). Only the
    // winner's number is tracked here; its fields are unpacked after the loop (the first
    // strictly smallest key wins, as on the CPU).
#define TY(K, N3, N5, NORM, PAR, AMIN) {                                                \
        const bool fx = (PAR == 1) ? even : odd;                                         \
        float key = NORM - (pre[N3] + pre[N5]) * 2.0f;                                   \
        if (fx) key = key + S.srt[7] * (4.0f * AMIN);                                    \
        if (key < best) { best = key; bt = K; }                                          \
    }
    TY(0, 0, 0, 2.0f, 0, 0.5f)
    TY(1, 1, 0, 4.0f, 1, 0.5f)
    TY(2, 2, 0, 6.0f, 0, 0.5f)
    TY(3, 3, 0, 8.0f, 1, 0.5f)
    TY(4, 4, 0, 10.0f, 0, 0.5f)
    TY(5, 1, 1, 8.0f, 0, 0.5f)
    TY(6, 2, 1, 10.0f, 1, 0.5f)
    TY(7, 2, 2, 14.0f, 0, 0.5f)
    TY(8, 8, 0, 18.0f, 0, 1.5f)
#undef TY
    // The same table packed: n3 and n5 one nibble per type, the sum parity one bit.
    const int n3 = (int)((0x822143210ull >> (4 * bt)) & 0xfu);
    const int n5 = (int)((0x021100000ull >> (4 * bt)) & 0xfu);
    S.n3 = n3;
    S.n5 = n5;
    S.fix = ((0x4au >> bt) & 1u) ? even : odd;
    // srt[n3] (-1 for n3 = 8: no value is left out) and srt[n5], by selects.
    S.u3 = n3 == 0 ? S.srt[0] : n3 == 1 ? S.srt[1] : n3 == 2 ? S.srt[2] : n3 == 3 ? S.srt[3]
         : n3 == 4 ? S.srt[4] : -1.0f;
    S.u5 = n5 == 0 ? S.srt[0] : n5 == 1 ? S.srt[1] : S.srt[2];
    S.cost = base + best;
    return S;
}

// e8p.rs `nearest` + `assign`: signed pattern values p and the shift (true: +1/4).
__device__ __forceinline__ void e8p_nearest(const float v[8], float p[8], bool& up) {
    const Scored lo = score_shift(v, false);
    const Scored hi = score_shift(v, true);
    up = hi.cost < lo.cost;
    float t[8], srt[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        t[i] = up ? hi.t[i] : lo.t[i];
        srt[i] = up ? hi.srt[i] : lo.srt[i];
    }
    const float u3 = up ? hi.u3 : lo.u3;
    const float u5 = up ? hi.u5 : lo.u5;
    const int n3 = up ? hi.n3 : lo.n3;
    const int n5 = up ? hi.n5 : lo.n5;
    const bool fix = up ? hi.fix : lo.fix;
    float w[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = abs_f(t[i]);
    if (strictly_decreasing(srt)) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float a = (0.5f + (u3 < w[i] ? 1.0f : 0.0f)) + (u5 < w[i] ? 1.0f : 0.0f);
            const bool flip = fix && (w[i] == srt[7]);
            p[i] = ((t[i] < 0.0f) != flip) ? -a : a;
        }
    } else {
        int rank[8];
        ranks(w, rank);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const float a = (0.5f + (rank[i] < n3 ? 1.0f : 0.0f)) + (rank[i] < n5 ? 1.0f : 0.0f);
            const bool flip = fix && (rank[i] == 7);
            p[i] = ((t[i] < 0.0f) != flip) ? -a : a;
        }
    }
}

// The 16-bit E8P index of signed pattern values (e8p.rs `index_packed` + `index_of_packed`).
__device__ __forceinline__ u32 e8p_index(const float p[8], bool up, const u16* __restrict__ key_to_id) {
    int key = 0;
    u32 hi = up ? 128u : 0u;
#pragma unroll
    for (int i = 7; i >= 0; --i) key = key * 3 + (int)abs_f(p[i]);  // |p| in {1/2, 3/2, 5/2}
#pragma unroll
    for (int i = 0; i < 7; ++i) hi |= (p[i] < 0.0f ? 1u : 0u) << i;
    const u32 id = __ldg(key_to_id + (key & 8191)) & 0xffu;
    return id | (hi << 8);
}

// e81b.rs `nearest`: the nearest of the 256 residual words to r, and its index.
__device__ __forceinline__ u32 e81b_nearest(const float r[8], float word[8]) {
    float a[8];
    bool negative[8];
    bool odd = false;
    float sum = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        a[i] = abs_f(r[i]);
        negative[i] = r[i] < 0.0f;
        odd = odd != negative[i];
        sum = sum + a[i];
    }
    float srt[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) srt[i] = a[i];
    sort8(srt);
    const float top2 = srt[0] + srt[1];
    const float smallest = srt[7];
    bool top[8], low[8];
    if (strictly_decreasing(srt)) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            top[i] = srt[2] < a[i];
            low[i] = a[i] == srt[7];
        }
    } else {
        int rank[8];
        ranks(a, rank);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            top[i] = rank[i] < 2;
            low[i] = rank[i] == 7;
        }
    }
    float pos = r[0];
    int pos_at = 0;
    float neg = 0.0f - r[0];
    int neg_at = 0;
#pragma unroll
    for (int i = 1; i < 8; ++i) {
        if (pos < r[i]) { pos = r[i]; pos_at = i; }
        if (i < 7) {
            const float nr = 0.0f - r[i];
            if (neg < nr) { neg = nr; neg_at = i; }
        }
    }
    const float cost_root = 2.0f - 2.0f * top2;
    const float cost_half = odd ? (2.0f - sum) + 2.0f * smallest : 2.0f - sum;
    const float cost_pos = 4.0f - 4.0f * pos;
    const float cost_neg = 4.0f - 4.0f * neg;
    float best = 0.0f;
    int kind = 0;
    if (cost_root < best) { best = cost_root; kind = 1; }
    if (cost_half < best) { best = cost_half; kind = 2; }
    if (cost_pos < best) { best = cost_pos; kind = 3; }
    if (cost_neg < best) { best = cost_neg; kind = 4; }
    u32 half_bits = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float root = top[i] ? (negative[i] ? -1.0f : 1.0f) : 0.0f;
        const bool flip = odd && low[i];
        const float half_root = (negative[i] != flip) ? -0.5f : 0.5f;
        const float plus = pos_at == i ? 2.0f : 0.0f;
        const float minus = neg_at == i ? -2.0f : 0.0f;
        float w = 0.0f;
        w = kind == 1 ? root : w;
        w = kind == 2 ? half_root : w;
        w = kind == 3 ? plus : w;
        w = kind == 4 ? minus : w;
        word[i] = w;
        if (i < 7 && w < 0.0f) half_bits |= 1u << i;
    }
    int lo = 0, hi = 0;
    bool lo_neg = false, hi_neg = false;
#pragma unroll
    for (int k = 7; k >= 0; --k) {
        if (top[k]) { lo = k; lo_neg = negative[k]; }
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        if (top[k]) { hi = k; hi_neg = negative[k]; }
    }
    const int root_bits = (lo_neg ? 1 : 0) + (hi_neg ? 2 : 0);
    const int pair = 7 * lo - lo * (lo - 1) / 2 + (hi - lo - 1);
    u32 index = 0;
    if (kind == 1) index = (u32)(1 + 4 * pair + root_bits);
    if (kind == 2) index = 113u + half_bits;
    if (kind == 3) index = 241u + (u32)pos_at;
    if (kind == 4) index = 249u + (u32)neg_at;
    return index & 0xffu;
}

// fixed.rs `encode_group` for one block already divided by its scale: the code (BPB bytes,
// little-endian) and the codeword c.
template <int BPB>
__device__ __forceinline__ u32 encode_block(const float v[8], float c[8], const u16* __restrict__ key_to_id) {
    float p[8];
    bool up;
    e8p_nearest(v, p, up);
    const u32 first = e8p_index(p, up, key_to_id);
    const float s = up ? 0.25f : -0.25f;
#pragma unroll
    for (int i = 0; i < 8; ++i) c[i] = p[i] + s;
    if constexpr (BPB == 2) {
        return first;
    } else if constexpr (BPB == 3) {
        float r[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) r[i] = (v[i] - c[i]) * 2.0f;
        float w[8];
        const u32 k = e81b_nearest(r, w);
#pragma unroll
        for (int i = 0; i < 8; ++i) c[i] = c[i] + w[i] * 0.5f;
        return first | (k << 16);
    } else {
        float r[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) r[i] = (v[i] - c[i]) * 4.0f;
        float p2[8];
        bool up2;
        e8p_nearest(r, p2, up2);
        const u32 second = e8p_index(p2, up2, key_to_id);
        const float s2 = up2 ? 0.25f : -0.25f;
#pragma unroll
        for (int i = 0; i < 8; ++i) c[i] = c[i] + (p2[i] + s2) * 0.25f;
        return first | (second << 16);
    }
}

// scale.rs `to_f16`: 0 below TINY; *overflow set when the scale does not fit f16.
__device__ __forceinline__ u16 scale_to_f16(float s, bool* overflow) {
    if (s < TINY) return 0;
    const u16 h = float_to_half(s);
    *overflow = (h & 0x7c00u) == 0x7c00u;
    return h;
}

// RoPE pairs (nq-rope's layouts): value `col` (< rotary) is one of the pair (ia, ib) of
// frequency k: (2k, 2k + 1) interleaved, (k, k + rotary / 2) split-half.
struct RopePair {
    int k, ia, ib;
};
__device__ __forceinline__ RopePair rope_pair(int col, int rotary, int interleaved)
{
    if (interleaved) return {col >> 1, col & ~1, (col & ~1) + 1};
    const int half = rotary >> 1;
    const int k = col < half ? col : col - half;
    return {k, k, k + half};
}

// Value `col` of a pair (a at ia, b at ib) rotated back from its position: nq-rope's
// `invert`, `a' = a c - b s`, `b' = b c + a s` with `s` negated, then the factor `down`
// (compiled with --fmad=false, so the products round as the CPU's do).
__device__ __forceinline__ float rope_inverted(
    RopePair p, int col, float a, float b, float c, float s, float down)
{
    const float sn = -s;
    return (col == p.ia ? a * c - b * sn : b * c + a * sn) * down;
}

// Sizes of the group of lanes that owns one row.
__device__ __forceinline__ int group_lanes(int bpr) { return bpr <= 8 ? 8 : (bpr <= 16 ? 16 : 32); }

template <int BPB>
__device__ __forceinline__ void encode_kernel(
    const u16* __restrict__ src16,    // f16 rows [m_rows, d], or null
    const u32* __restrict__ idx,      // kept row indices (n_rows), or null: rows 0..n_rows
    long long m_rows,
    const float* __restrict__ src32,  // f32 rows [n_rows, d] (when src16 is null)
    long long n_rows,
    int d,
    const float* __restrict__ rope_cos, // [n_rows, rope_rotary / 2] RoPE inversion, or null
    const float* __restrict__ rope_sin, // [n_rows, rope_rotary / 2]
    int rope_rotary,                  // rotated values per row (even, <= d)
    int rope_interleaved,             // pairs (2i, 2i + 1) if set, else (i, i + rotary / 2)
    float rope_down,                  // factor on the rotated values (1: none)
    const float* __restrict__ mean,   // [d] or null
    const float* __restrict__ smooth, // [d] or null
    const float* __restrict__ signs,  // [d] scaled signs D/sqrt(n) of each block, or null
    float* __restrict__ prepared,     // [n_rows, d]: write the prepared rows and stop, or null
    u8* __restrict__ codes,           // code bytes of rows out_row0.. (FixedCodec layout)
    u16* __restrict__ scales,         // f16 bits of rows out_row0..
    long long out_row0,
    int mode,                         // 0 AbsMax, 1 Rms, 2 BestOf
    int n_cand,
    const float* __restrict__ gains,  // [n_cand] BestOf decision-scale gains
    float rms_factor,
    float max_coord,
    const u16* __restrict__ key_to_id,
    u64* __restrict__ status)
{
    // Per group of G lanes: 8 G + 8 floats of squares, G + 8 of each best-of sum; at most
    // THREADS / 8 groups, so 8 extra floats per group fit in THREADS more.
    __shared__ float sh[THREADS * 8 + THREADS];
    __shared__ float sh_xc[THREADS * 2];
    __shared__ float sh_cc[THREADS * 2];
    const int bpr = d >> 3;
    const int G = group_lanes(bpr);
    const int t = threadIdx.x & (G - 1);
    const int gi = threadIdx.x / G;
    const long long row = (long long)blockIdx.x * (THREADS / G) + gi;
    const bool row_ok = row < n_rows;
    const bool active = row_ok && t < bpr;
    // Per-group shared regions, offset by 8 banks per group.
    float* sq = sh + gi * (8 * G + 8);
    float* gxc = sh_xc + gi * (G + 8);
    float* gcc = sh_cc + gi * (G + 8);

    float x[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = 0.0f;
    if (active) {
        if (src16 != nullptr) {
            long long r = row;
            if (idx != nullptr) r = (long long)idx[row];
            if (r >= m_rows) {
                atomicMin(status + 2, ((u64)(u32)r << 32) | (u64)(u32)m_rows);
            } else {
                const u16* s = src16 + r * d + 8 * t;
                if ((((unsigned long long)s) & 15ull) == 0) {
                    const U4 q = *reinterpret_cast<const U4*>(s);
                    const u32 w4[4] = {q.a, q.b, q.c, q.d};
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        x[2 * i] = half_to_float((u16)(w4[i] & 0xffffu));
                        x[2 * i + 1] = half_to_float((u16)(w4[i] >> 16));
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < 8; ++i) x[i] = half_to_float(s[i]);
                }
            }
        } else {
            const float* s = src32 + row * d + 8 * t;
#pragma unroll
            for (int i = 0; i < 8; ++i) x[i] = s[i];
        }
    }
    if (rope_cos != nullptr) {
        // RoPE inversion (nq-rope's `invert`): the partner of a value may sit in another
        // lane, so the row goes through this group's shared region (free until the row sums
        // below). Every lane of the warp reaches both barriers.
        if (active) {
#pragma unroll
            for (int i = 0; i < 8; ++i) sq[8 * t + i] = x[i];
        }
        __syncwarp();
        if (active) {
            const float* rc = rope_cos + row * (rope_rotary / 2);
            const float* rs = rope_sin + row * (rope_rotary / 2);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int col = 8 * t + i;
                if (col < rope_rotary) {
                    const RopePair p = rope_pair(col, rope_rotary, rope_interleaved);
                    x[i] = rope_inverted(p, col, sq[p.ia], sq[p.ib], rc[p.k], rs[p.k], rope_down);
                }
            }
        }
        __syncwarp();
    }
    if (active && src16 != nullptr) {
        if (mean != nullptr) {
#pragma unroll
            for (int i = 0; i < 8; ++i) x[i] = x[i] - mean[8 * t + i];
        }
        if (smooth != nullptr) {
#pragma unroll
            for (int i = 0; i < 8; ++i) x[i] = x[i] * smooth[8 * t + i];
        }
    }

    if (signs != nullptr) {
        // Randomized Hadamard: x <- H (D/sqrt(n) x) per power-of-two block of the row (the
        // blocks are the binary digits of d, largest first), strides in ascending order.
        if (active) {
#pragma unroll
            for (int i = 0; i < 8; ++i) x[i] = x[i] * signs[8 * t + i];
        }
#pragma unroll
        for (int h = 1; h < 8; h <<= 1) {
#pragma unroll
            for (int k = 0; k < 8; ++k) {
                if ((k & h) == 0) {
                    const float a = x[k];
                    const float b = x[k + h];
                    x[k] = a + b;
                    x[k + h] = a - b;
                }
            }
        }
        // This lane's Hadamard block, in 8-blocks (0 for lanes past the row).
        int size = 0;
        {
            int rem = bpr, start = 0;
            while (rem > 0) {
                const int hb = 1 << (31 - __clz(rem));
                if (t < start + hb) { size = hb; break; }
                start += hb;
                rem -= hb;
            }
        }
        for (int s = 1; s < G; s <<= 1) {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float other = __shfl_xor_sync(FULL, x[i], s, G);
                if (s < size) x[i] = (t & s) ? (other - x[i]) : (x[i] + other);
            }
        }
    }

    if (prepared != nullptr) {
        if (active) {
            float* o = prepared + row * d + 8 * t;
#pragma unroll
            for (int i = 0; i < 8; ++i) o[i] = x[i];
        }
        return;
    }

    if (active) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            if ((__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u) {
                const u64 at = (u64)(row * d + 8 * t + i);
                atomicMin(status, (at << 32) | (u64)__float_as_uint(x[i]));
                break;
            }
        }
    }

    // Row statistics (scale.rs `row_stats`): per column-of-8 f32 sums of squares over the
    // blocks in order, then their f64 sum in order; the largest magnitude.
    float amax = 0.0f;
    if (active) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            sq[8 * t + i] = x[i] * x[i];
            const float a = abs_f(x[i]);
            amax = a > amax ? a : amax;
        }
    }
    __syncwarp();
    float acc = 0.0f;
    if (t < 8) {
        for (int b = 0; b < bpr; ++b) acc = acc + sq[8 * b + t];
    }
    double sumsq = 0.0;
#pragma unroll
    for (int i = 0; i < 8; ++i) sumsq = sumsq + (double)__shfl_sync(FULL, acc, i, G);
    for (int s = 1; s < G; s <<= 1) {
        const float o = __shfl_xor_sync(FULL, amax, s, G);
        amax = o > amax ? o : amax;
    }
    const float rms = (float)__dsqrt_rn(__ddiv_rn(sumsq, (double)d));

    float c[8];
    float v[8];
    u32 best_code = 0;
    u16 best_h = 0;
    bool overflow = false;
    float overflow_scale = 0.0f;
    if (mode != 2) {
        const float target = mode == 1 ? rms_factor * rms : __fdiv_rn(amax, max_coord);
        const u16 h = scale_to_f16(target, &overflow);
        if (overflow) overflow_scale = target;
        const float hs = half_to_float(h);
        const float inv = hs > 0.0f ? __fdiv_rn(1.0f, hs) : 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = x[i] * inv;
        best_code = encode_block<BPB>(v, c, key_to_id);
        best_h = h;
    } else {
        double best = __longlong_as_double(0x7ff0000000000000ll);
        for (int k = 0; k < n_cand; ++k) {
            const float dd = rms_factor * rms * gains[k];
            const float dec = dd < TINY ? 0.0f : dd;
            const float inv = dd < TINY ? 0.0f : __fdiv_rn(1.0f, dd);
#pragma unroll
            for (int i = 0; i < 8; ++i) v[i] = x[i] * inv;
            const u32 code = encode_block<BPB>(v, c, key_to_id);
            float xcb = 0.0f, ccb = 0.0f;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                xcb = xcb + v[i] * c[i];
                ccb = ccb + c[i] * c[i];
            }
            if (active) { gxc[t] = xcb; gcc[t] = ccb; }
            __syncwarp();
            double xc_r = 0.0, cc_r = 0.0;
            for (int b = 0; b < bpr; ++b) {
                xc_r = xc_r + (double)gxc[b];
                cc_r = cc_r + (double)gcc[b];
            }
            __syncwarp();
            xc_r = xc_r * (double)dec;
            const float fit = (cc_r > 0.0 && xc_r > 0.0) ? (float)__ddiv_rn(xc_r, cc_r) : 0.0f;
            bool of = false;
            const u16 h = scale_to_f16(fit, &of);
            if (of) {
                if (!overflow) overflow_scale = fit;
                overflow = true;
            }
            const double s = (double)half_to_float(h);
            const double err = sumsq - 2.0 * s * xc_r + s * s * cc_r;
            if (k == 0) best_code = code;
            if (err < best) {
                best = err;
                best_code = code;
                best_h = h;
            }
        }
    }
    if (!row_ok) return;
    if (overflow && t == 0) {
        atomicMin(status + 1, ((u64)row << 32) | (u64)__float_as_uint(overflow_scale));
    }
    if (active) {
        u8* o = codes + ((out_row0 + row) * bpr + t) * BPB;
#pragma unroll
        for (int i = 0; i < BPB; ++i) o[i] = (u8)((best_code >> (8 * i)) & 0xffu);
    }
    if (t == 0) scales[out_row0 + row] = best_h;
}

// At least 3 blocks of 256 threads per multiprocessor (<= 85 registers): measured on an H100,
// B4 ran 12% faster than with the compiler's 96 registers (384 -> 337 us for 8 heads x 32K x
// 128, Rms; 1185 -> 1091 us BestOf 4), B2 and B3 (77 and 80 registers without the bound) the
// same within 1%.
#define MIN_BLOCKS 3

#define ENCODE_ENTRY(NAME, BPB)                                                                  \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) NAME(                      \
        const u16* src16, const u32* idx, long long m_rows, const float* src32,                  \
        long long n_rows, int d, const float* rope_cos, const float* rope_sin, int rope_rotary,  \
        int rope_interleaved, float rope_down, const float* mean, const float* smooth,           \
        const float* signs,                                                                      \
        float* prepared, u8* codes, u16* scales, long long out_row0, int mode, int n_cand,       \
        const float* gains, float rms_factor, float max_coord, const u16* key_to_id,             \
        u64* status)                                                                             \
    {                                                                                            \
        encode_kernel<BPB>(src16, idx, m_rows, src32, n_rows, d, rope_cos, rope_sin,             \
                           rope_rotary, rope_interleaved, rope_down, mean, smooth, signs, prepared, \
                           codes, scales, out_row0, mode, n_cand, gains, rms_factor, max_coord,  \
                           key_to_id, status);                                                   \
    }

ENCODE_ENTRY(encode_b2, 2)
ENCODE_ENTRY(encode_b3, 3)
ENCODE_ENTRY(encode_b4, 4)

// Per-column f64 sums of gathered f16 rows (centered by `mean` when given): one partial per
// (chunk of rows, column), each summed in row order; `column_sums_finish` adds the partials
// in chunk order, so the result is deterministic.
extern "C" __global__ void column_sums_partial(
    const u16* __restrict__ src16, const u32* __restrict__ idx, long long m_rows,
    long long n_rows, int d, const float* __restrict__ rope_cos,
    const float* __restrict__ rope_sin, int rope_rotary, int rope_interleaved, float rope_down,
    const float* __restrict__ mean, long long rows_per_chunk,
    double* __restrict__ part_sum, double* __restrict__ part_sq, u64* __restrict__ status)
{
    const int col = blockIdx.y * blockDim.x + threadIdx.x;
    const long long chunk = blockIdx.x;
    if (col >= d) return;
    const long long r0 = chunk * rows_per_chunk;
    long long r1 = r0 + rows_per_chunk;
    if (r1 > n_rows) r1 = n_rows;
    const float m = mean != nullptr ? mean[col] : 0.0f;
    double s = 0.0, q = 0.0;
    for (long long row = r0; row < r1; ++row) {
        const long long r = idx != nullptr ? (long long)idx[row] : row;
        if (r >= m_rows) {
            atomicMin(status + 2, ((u64)(u32)r << 32) | (u64)(u32)m_rows);
            continue;
        }
        float x;
        if (rope_cos != nullptr && col < rope_rotary) {
            const RopePair p = rope_pair(col, rope_rotary, rope_interleaved);
            const long long at = row * (rope_rotary / 2) + p.k;
            x = rope_inverted(p, col, half_to_float(src16[r * d + p.ia]),
                              half_to_float(src16[r * d + p.ib]), rope_cos[at], rope_sin[at],
                              rope_down);
        } else {
            x = half_to_float(src16[r * d + col]);
        }
        if (mean != nullptr) x = x - m;
        const double xd = (double)x;
        s = s + xd;
        q = q + xd * xd;
    }
    part_sum[chunk * d + col] = s;
    part_sq[chunk * d + col] = q;
}

extern "C" __global__ void column_sums_finish(
    const double* __restrict__ part_sum, const double* __restrict__ part_sq, long long chunks,
    int d, double* __restrict__ sum, double* __restrict__ sq)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    double s = 0.0, q = 0.0;
    for (long long c = 0; c < chunks; ++c) {
        s = s + part_sum[c * d + col];
        q = q + part_sq[c * d + col];
    }
    sum[col] = s;
    sq[col] = q;
}
