// Fused decode attention over nq-cuda's device-resident compressed KV storage
// (src/store.rs), flash-decoding style. The contract and the layout of the descriptor table
// are documented in src/attend.rs; this file follows them.
//
// Compiled once per (NQ_D, NQ_KB, NQ_VB): head dim (64, 128, 256) and bytes per 8 values
// of the key and value codes (2, 3, 4: the code rate in bits per value). With
// NQ_STORE_ONLY defined only the storage helper kernel (f32 -> f16 rows) is compiled.
//
// Arithmetic (why the results stay within the bound derived in tests/attend.rs):
// - codes decode to f16 pairs *exactly*: every E8P coordinate is +-(a + 1/2) + -1/4 with
//   a in {0, 1, 2}, the 3-bit residual adds w/2 with w in {0, +-1/2, +-1, +-2}, the 4-bit
//   second stage adds c2/4; all these are multiples of 1/16 below 4 in magnitude (11
//   significant bits suffice). The magnitudes come from a byte permutation (PRMT) of
//   f16 high bytes selected by packed per-pattern selectors (tables built and checked
//   against nq-lattice's decoder in src/attend.rs).
// - the NQ_ROWS8 kernel splits each value block into its signed magnitudes and its shift
//   (a constant per token and block), both exact in f16, and accumulates P.(magnitudes)
//   and P.(shifts) in f32 by separate products, summed in the merge: the same f16 operands,
//   only the f32 summation order differs.
// - the rotated query is scaled by a power of two to max |q| < 1 and rounded to f16
//   (relative error <= 2^-11 per element); scores accumulate in f32 on the tensor cores
//   (mma.sync m16n8k16), then are multiplied by the token's f16 scale and the power of two.
// - softmax weights times the value scale are rounded to f16 for the P.V product
//   (relative error <= 2^-11 while w * v_scale >= 2^-14, the smallest normal f16; below,
//   an absolute error <= 2^-25 per token, w <= 1 being relative to the running maximum),
//   accumulated in f32.
// - online softmax in base 2 (ex2.approx, relative error ~2^-22), partials merged by
//   attend_combine, which also un-rotates the value accumulator (f32 butterflies).

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;
typedef unsigned char u8;

#define NEG_INF __int_as_float(0xff800000u)
#define LOG2E 1.4426950408889634f

// Descriptor table: DESC_FIXED u64 fields per sequence, then n[h] (compressed tokens of
// head h), then last_pos[h] + 1 (0: no compressed token), then the t query positions.
#define F_KC 0
#define F_KS 1
#define F_VC 2
#define F_VS 3
#define F_POS 4
#define F_DK 5
#define F_DV 6
#define F_DPOS 7
#define F_DMASS 8
#define F_KMEAN 9
#define F_VMEAN 10
#define F_KSMOOTH 11
#define F_CAP 12
#define F_DCAP 13
#define F_M 14
#define DESC_FIXED 16

__device__ __forceinline__ u16 f32_to_f16(float x)
{
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));
    return h;
}

__device__ __forceinline__ float f16_to_f32(u16 h)
{
    float x;
    asm("cvt.f32.f16 %0, %1;" : "=f"(x) : "h"(h));
    return x;
}

__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// f32 -> f16 rows of the dense window: src [heads, rows, d] into dst at
// dst[h * head_stride + offset + i] (i < rows * d). The index of the first non-finite
// input lowers *bad (atomicMin; the host reads it before the next compression).
extern "C" __global__ void f32_to_f16_rows(
    const float* __restrict__ src,
    u16* __restrict__ dst,
    long long per_head,
    int heads,
    long long head_stride,
    long long offset,
    unsigned long long* __restrict__ bad)
{
    const long long total = per_head * heads;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const long long h = i / per_head;
        const long long k = i - h * per_head;
        const float x = src[i];
        if (!isfinite(x)) atomicMin(bad, (unsigned long long)i);
        dst[h * head_stride + offset + k] = f32_to_f16(x);
    }
}

#ifndef NQ_STORE_ONLY

#define D NQ_D
#define KB NQ_KB
#define VB NQ_VB
#define NB (D / 8)                  // E8 blocks per row
#define KROW (NB * KB)              // key code bytes per token
#define VROW (NB * VB)              // value code bytes per token
#define KT (D / 16)                 // k-tiles of the score product
#define KLB (NB / 4)                // key blocks per lane (lane c: blocks c*KLB ..)
#define KLANE (KLB * KB)            // key code bytes per lane and token
#define VBPT (NB / 8)               // value blocks per lane (lane g: blocks g*VBPT ..)
#define VLANE (VBPT * VB)           // value code bytes per lane and token
#define NT (D / 8)                  // n-tiles of the P.V product
#define NWARPS 4
#define NTHREADS (NWARPS * 32)
#define REPS 16                     // table replicas: lane & 15 reads its own, conflict-free
#define RES ((KB == 3) || (VB == 3))
// minBlocksPerMultiprocessor of attend_split (the host's AttendTuning::min_blocks).
#ifndef NQ_MINB
#define NQ_MINB 1
#endif
#define MINB NQ_MINB
#ifndef NQ_PREFETCH
#define NQ_PREFETCH 1
#endif
// NQ_ROWS8: every CTA has at most 8 query rows (group * t <= 8: decode with GQA up to 8).
// The score product then only fills rows 0-7 of its 16-row tile, and the value product is
// computed transposed, O^T += V^T . P^T (value dims as the 16 rows, query rows as the 8
// columns): half the accumulators and half the mma of the P.V product of the general path,
// and the softmax of 8 rows instead of 16.
#ifndef NQ_ROWS8
#define NQ_ROWS8 0
#endif
#define MT (D / 16)                 // m-tiles of the transposed P.V product (NQ_ROWS8)
#define MTS ((VBPT + 1) / 2)        // m-tiles of the value shifts' product (NQ_ROWS8)

// E8_LO/E8_HI: f16 high bytes of the E8P magnitudes (index a + 4 * negative) and
// RW_LO/RW_HI: those of half a residual word coordinate; defined by the host from the
// byte tables its selector tables index (E8_BYTES, RW_BYTES in src/attend.rs).
#if !defined(E8_LO) || !defined(E8_HI) || !defined(RW_LO) || !defined(RW_HI)
#error "the host defines the byte tables"
#endif
#define HALF2_QUARTER 0x34003400u   // (0.25, 0.25)
#define HALF2_MQUARTER 0xB400B400u  // (-0.25, -0.25)

static_assert(D == 64 || D == 128 || D == 256, "head dim");
static_assert(KB >= 2 && KB <= 4 && VB >= 2 && VB <= 4, "code rate");

// Shared memory (bytes): a union of {tables; the f32 query staging; the warp merge
// buffer}, then the f16 query, then per-row facts.
// The decode tables (see `e8p_signed`): 256 rows of 256 bytes, then with RES the residual
// selectors (256 entries x REPS replicas x 8 bytes).
#define ROW_TAB_BYTES (256 * 256)
#define TAB_BYTES (ROW_TAB_BYTES + (RES ? 256 * REPS * 8 : 0))
#define QF_BYTES (16 * D * 4)
#define MERGE_BYTES (NWARPS * 16 * D * 4 + NWARPS * 16 * 2 * 4)
#define MAX2(a, b) ((a) > (b) ? (a) : (b))
#define UNION_BYTES MAX2(TAB_BYTES, MAX2(QF_BYTES, MERGE_BYTES))
#define QH_BYTES (16 * D * 2)
#define ROW_BYTES (16 * 4 * 4)
#define SMEM_BYTES (UNION_BYTES + QH_BYTES + ROW_BYTES)

// The host reads this to size the dynamic shared memory.
extern "C" __global__ void attend_smem_bytes(int* out) { *out = SMEM_BYTES; }

__device__ __forceinline__ u32 hadd2(u32 a, u32 b)
{
    u32 d;
    asm("add.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
}

__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c)
{
    u32 d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// (lo, hi) -> f16x2 with lo in the low half.
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi)
{
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

__device__ __forceinline__ void mma16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// N bytes at p into little-endian words, with loads as wide as the alignment A allows.
template <int N, int A>
__device__ __forceinline__ void load_bytes(const u8* __restrict__ p, u32 (&w)[(N + 3) / 4])
{
    if constexpr (A >= 16 && N % 16 == 0) {
#pragma unroll
        for (int i = 0; i < N / 16; ++i) {
            const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
            w[4 * i] = v.x; w[4 * i + 1] = v.y; w[4 * i + 2] = v.z; w[4 * i + 3] = v.w;
        }
    } else if constexpr (A >= 8 && N % 8 == 0) {
#pragma unroll
        for (int i = 0; i < N / 8; ++i) {
            const uint2 v = __ldg(reinterpret_cast<const uint2*>(p) + i);
            w[2 * i] = v.x; w[2 * i + 1] = v.y;
        }
    } else if constexpr (A >= 4 && N % 4 == 0) {
#pragma unroll
        for (int i = 0; i < N / 4; ++i) w[i] = __ldg(reinterpret_cast<const u32*>(p) + i);
    } else if constexpr (A >= 2 && N % 2 == 0) {
#pragma unroll
        for (int i = 0; i < (N + 3) / 4; ++i) w[i] = 0;
#pragma unroll
        for (int i = 0; i < N / 2; ++i)
            w[i / 2] |= (u32)__ldg(reinterpret_cast<const u16*>(p) + i) << (16 * (i & 1));
    } else {
#pragma unroll
        for (int i = 0; i < (N + 3) / 4; ++i) w[i] = 0;
#pragma unroll
        for (int i = 0; i < N; ++i) w[i / 4] |= (u32)__ldg(p + i) << (8 * (i & 3));
    }
}

// Largest power of two <= 16 dividing both a and b.
__host__ __device__ constexpr int align_of2(int a, int b)
{
    return ((a | b) & 1) ? 1 : ((a | b) & 2) ? 2 : ((a | b) & 4) ? 4 : ((a | b) & 8) ? 8 : 16;
}

template <int N>
__device__ __forceinline__ u32 byte_at(const u32 (&w)[N], int o)
{
    return (w[o >> 2] >> ((o & 3) * 8)) & 0xffu;
}

template <int N>
__device__ __forceinline__ u32 code16(const u32 (&w)[N], int o)
{
    return byte_at(w, o) | (byte_at(w, o + 1) << 8);
}

// PTX prmt: unlike __byte_perm, a selector nibble with bit 3 set replicates the byte's sign;
// every selector below has bit 3 clear (src/attend.rs tests the tables), so no masking.
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel)
{
    u32 d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
}

// The signed magnitudes of the E8P code in half HI of w (its shift apart, e8p_shift) as 4
// f16 pairs (coordinates 2k, 2k+1 in pair k), exactly.
// trep points at this lane's replica of the decode tables in shared memory: row r (256
// bytes) holds the pattern selectors of pattern r (bytes 0-127) and the sign selectors of
// sign byte r (bytes 128-255: the 7 sign bits, bit 7 being the shift and ignored); replica
// q of an entry is at byte 8 q. A byte of the code times 256 is thus a row offset, one
// byte permutation away (no mask, no shift-and-add).
template <int HI>
__device__ __forceinline__ void e8p_signed(u32 w, const u8* __restrict__ trep, u32 (&out)[4])
{
    const u32 po = HI ? prmt(w, 0u, 0x4424u) : prmt(w, 0u, 0x4404u);   // pattern byte << 8
    const u32 so = HI ? prmt(w, 0u, 0x4434u) : (w & 0xff00u);          // sign byte << 8
    const uint2 p = *reinterpret_cast<const uint2*>(trep + po);
    const uint2 s = *reinterpret_cast<const uint2*>(trep + 128 + so);
    const u32 lo = p.x ^ s.x;
    const u32 hi = p.y ^ s.y;
    out[0] = prmt(E8_LO, E8_HI, lo);
    out[1] = prmt(E8_LO, E8_HI, lo >> 16);
    out[2] = prmt(E8_LO, E8_HI, hi);
    out[3] = prmt(E8_LO, E8_HI, hi >> 16);
}

// The shift of the E8P code in half HI of w, +-1/4 in both halves of an f16 pair: +1/4
// when bit 15 of the code is set.
template <int HI>
__device__ __forceinline__ u32 e8p_shift(u32 w)
{
    return (prmt(w, 0u, HI ? 0x3232u : 0x1010u) & 0x80008000u) ^ HALF2_MQUARTER;
}

// The block at byte o of w (o a compile-time constant), at rate BITS, without its shifts:
// signed magnitudes, plus the residual word at 3 bits, plus the second stage at 4 bits.
template <int BITS, int N>
__device__ __forceinline__ void decode_signed(const u32 (&w)[N], int o, const u8* __restrict__ trep, u32 (&c)[4])
{
    if constexpr (BITS == 3) {
        e8p_signed<0>(code16(w, o), trep, c);
        const uint2 r = *reinterpret_cast<const uint2*>(trep + ROW_TAB_BYTES + (byte_at(w, o + 2) << 7));
        c[0] = hadd2(c[0], prmt(RW_LO, RW_HI, r.x));
        c[1] = hadd2(c[1], prmt(RW_LO, RW_HI, r.x >> 16));
        c[2] = hadd2(c[2], prmt(RW_LO, RW_HI, r.y));
        c[3] = hadd2(c[3], prmt(RW_LO, RW_HI, r.y >> 16));
    } else if constexpr (BITS == 2) {
        // 2-byte codes start at even bytes: half (o / 2) % 2 of word o / 4.
        if ((o & 3) == 0) e8p_signed<0>(w[o >> 2], trep, c);
        else e8p_signed<1>(w[o >> 2], trep, c);
    } else {
        // Two codes in one aligned word: s1 + s2 / 4.
        static_assert(BITS == 4, "code rate");
        u32 c2[4];
        e8p_signed<0>(w[o >> 2], trep, c);
        e8p_signed<1>(w[o >> 2], trep, c2);
#pragma unroll
        for (int k = 0; k < 4; ++k) c[k] = hfma2(c2[k], HALF2_QUARTER, c[k]);
    }
}

// The shift term of the block at byte o of w (a constant over its 8 values) in both halves
// of an f16 pair: +-1/4 at 2 and 3 bits, t1 + t2 / 4 (+-5/16 or +-3/16) at 4 bits.
template <int BITS, int N>
__device__ __forceinline__ u32 block_shift(const u32 (&w)[N], int o)
{
    if constexpr (BITS == 3) return e8p_shift<0>(code16(w, o));
    else if constexpr (BITS == 2) return (o & 3) == 0 ? e8p_shift<0>(w[o >> 2]) : e8p_shift<1>(w[o >> 2]);
    else return hfma2(e8p_shift<1>(w[o >> 2]), HALF2_QUARTER, e8p_shift<0>(w[o >> 2]));
}

// The block at byte o of w as 4 f16 pairs: decode_signed plus block_shift. Every partial
// sum is a multiple of 1/16 below 4 in magnitude, so the order of the additions does not
// matter: the values are the codec's, exactly.
template <int BITS, int N>
__device__ __forceinline__ void decode_block(const u32 (&w)[N], int o, const u8* __restrict__ trep, u32 (&c)[4])
{
    decode_signed<BITS>(w, o, trep, c);
    const u32 sh = block_shift<BITS>(w, o);
#pragma unroll
    for (int k = 0; k < 4; ++k) c[k] = hadd2(c[k], sh);
}

#if NQ_ROWS8
// The shifts of the blocks at byte o of two tokens' codes (wa, wb) as one f16 pair (wa's
// low), as block_shift gives them for one token.
template <int BITS, int N>
__device__ __forceinline__ u32 shift_pair(const u32 (&wa)[N], const u32 (&wb)[N], int o)
{
    // Bit 15 of the code in half `hi` of a and of b, at bits 15 and 31: +1/4 when set.
    auto pair = [](u32 a, u32 b, bool hi) {
        return (prmt(a, b, hi ? 0x7632u : 0x5410u) & 0x80008000u) ^ HALF2_MQUARTER;
    };
    if constexpr (BITS == 3) {
        return pair(code16(wa, o), code16(wb, o), false);
    } else if constexpr (BITS == 2) {
        return pair(wa[o >> 2], wb[o >> 2], (o & 3) != 0);
    } else {
        const u32 a = wa[o >> 2], b = wb[o >> 2];
        return hfma2(pair(a, b, true), HALF2_QUARTER, pair(a, b, false));
    }
}
#endif

// Every accumulator fragment x[j] times (f0, f1, f2, f3), element by element.
template <int N>
__device__ __forceinline__ void scale_frags(float (&x)[N][4], float f0, float f1, float f2, float f3)
{
#pragma unroll
    for (int j = 0; j < N; ++j) {
        x[j][0] *= f0; x[j][1] *= f1;
        x[j][2] *= f2; x[j][3] *= f3;
    }
}

__device__ __forceinline__ float warp_sum(float x)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

// Token i (of tokens with positions x) is visible from a query at p iff x <= p and, with a
// window w > 0, x + w > p (saturating, as the CPU cache).
__device__ __forceinline__ bool visible(u32 x, u32 p, u32 w)
{
    if (x > p) return false;
    if (w == 0) return true;
    const u32 xw = (x > 0xffffffffu - w) ? 0xffffffffu : x + w;
    return xw > p;
}

// First index in pos[0..n) whose token is not hidden by `pred` (positions ascending):
// lower_bound for "x + w <= p" (too old) or "x <= p" (not in the future).
__device__ __forceinline__ int first_not_older(const u32* __restrict__ pos, int n, u32 p, u32 w)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        const u32 x = pos[mid];
        const u32 xw = (x > 0xffffffffu - w) ? 0xffffffffu : x + w;
        if (xw <= p) lo = mid + 1; else hi = mid;
    }
    return lo;
}

__device__ __forceinline__ int first_after(const u32* __restrict__ pos, int n, u32 p)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (pos[mid] <= p) lo = mid + 1; else hi = mid;
    }
    return lo;
}

#if NQ_ROWS8
// One 16-token tile of the NQ_ROWS8 path, after the score product: the online softmax of
// the lane's score row g (sc[nt][0..1]: tokens tb + 8 nt + 2c + {0, 1}), then
// O^T += V^T . P^T with V^T decoded straight from the codes (rotated space).
__device__ __forceinline__ void softmax_pv_rows8(
    float (&sc)[2][4], int tb, int c, int lo0, int hi0, float qinv0, float qkm0,
    const float (&kscl)[2][2], const float (&vscl)[2][2], const u32 (&vw)[4][(VLANE + 3) / 4],
    const u8* __restrict__ trep, float& m0, float& l0, float (&o)[MT][4], float (&osh)[MTS][4])
{
    float mx0 = NEG_INF;
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int tok = tb + 8 * nt + 2 * c + e;
            const float s0 = (tok >= lo0 && tok < hi0)
                ? sc[nt][e] * (qinv0 * kscl[nt][e] * LOG2E) + qkm0 : NEG_INF;
            sc[nt][e] = s0;
            mx0 = fmaxf(mx0, s0);
        }
    }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    const float nm0 = fmaxf(m0, mx0);
    // After the first tiles the running maximum rarely grows: the accumulators are rescaled
    // only when it grows in some row of the warp (the factor is exactly 1 in the others).
    const bool grew = nm0 > m0;
    const float corr0 = grew ? ex2(m0 - nm0) : 1.0f;
    m0 = nm0;
    float w[4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) w[2 * nt + e] = nm0 == NEG_INF ? 0.0f : ex2(sc[nt][e] - nm0);
    }
    l0 = l0 * corr0 + ((w[0] + w[1]) + (w[2] + w[3]));
    // B operand of O^T += V^T . P^T: P of row g at tokens 2c, 2c + 1 and 2c + 8, 2c + 9
    // (the lane's own scores), times each token's value scale.
    const u32 pb0 = pack_f16x2(w[0] * vscl[0][0], w[1] * vscl[0][1]);
    const u32 pb1 = pack_f16x2(w[2] * vscl[1][0], w[3] * vscl[1][1]);
    if (__any_sync(0xffffffffu, grew)) {
        // Columns 2c, 2c + 1 of O^T are query rows 2c, 2c + 1: lanes 8c and 8c + 4 hold
        // their factors.
        const float ca = __shfl_sync(0xffffffffu, corr0, 8 * c);
        const float cb = __shfl_sync(0xffffffffu, corr0, 8 * c + 4);
        scale_frags(o, ca, cb, ca, cb);
        scale_frags(osh, ca, cb, ca, cb);
    }
    // The blocks' shifts, a constant per (token, block), by one product: O_sh^T (block
    // rows x query rows) += T^T . P^T; rows g and g + 8 of m-tile j are the lane's blocks
    // g * VBPT + 2j and + 1, columns as in O^T. The merge adds them to every coordinate.
#pragma unroll
    for (int j = 0; j < MTS; ++j) {
        const bool odd = 2 * j + 1 < VBPT;
        const u32 a[4] = {
            shift_pair<VB>(vw[0], vw[1], (2 * j) * VB),
            odd ? shift_pair<VB>(vw[0], vw[1], (2 * j + 1) * VB) : 0u,
            shift_pair<VB>(vw[2], vw[3], (2 * j) * VB),
            odd ? shift_pair<VB>(vw[2], vw[3], (2 * j + 1) * VB) : 0u,
        };
        mma16816(osh[j], a, pb0, pb1);
    }
    // A operand: rows g and g + 8 of m-tile 4 be + i are coordinates 2i, 2i + 1 of the
    // lane's value block g * VBPT + be; columns are tokens 2c, 2c + 1 (a0, a1) and
    // 2c + 8, 2c + 9 (a2, a3).
#pragma unroll
    for (int be = 0; be < VBPT; ++be) {
        u32 cv[4][4];
#pragma unroll
        for (int e = 0; e < 4; ++e) decode_signed<VB>(vw[e], be * VB, trep, cv[e]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const u32 a[4] = {
                __byte_perm(cv[0][i], cv[1][i], 0x5410u),
                __byte_perm(cv[0][i], cv[1][i], 0x7632u),
                __byte_perm(cv[2][i], cv[3][i], 0x5410u),
                __byte_perm(cv[2][i], cv[3][i], 0x7632u),
            };
            mma16816(o[be * 4 + i], a, pb0, pb1);
        }
    }
}
#endif

// One CTA: one (sequence, kv head, tile of 16 query rows) and one split: either a chunk of
// the compressed tokens (split < splits_c) or of the dense rows. Writes one partial
// (max in log2 units, sum of weights, weighted value sum) per valid query row.
// Query rows of the tile: R = mt * 16 + rho < group * t, query head h * group + R / t,
// row R % t. Partials: index ((b * Hq + j) * t + r) * splits + split.
extern "C" __global__ void __launch_bounds__(NTHREADS, MINB) attend_split(
    const u64* __restrict__ desc,
    int desc_stride,
    const float* __restrict__ q,
    const float* __restrict__ ksigns,
    const u64* __restrict__ tabs,
    float* __restrict__ part_acc,
    float* __restrict__ part_ml,
    float* __restrict__ dscores,
    int t,
    int hkv,
    int group,
    int splits_c,
    int splits,
    int chunk,
    int dchunk,
    int m_max,
    u32 window,
    float scale)
{
    extern __shared__ __align__(16) unsigned char smem[];
    u64* tab = reinterpret_cast<u64*>(smem);             // the decode tables (e8p_signed)
    float* qf = reinterpret_cast<float*>(smem);          // aliases the tables (staging)
    float* mbuf = reinterpret_cast<float*>(smem);        // aliases the tables (merge)
    float* mml = mbuf + NWARPS * 16 * D;
    u16* qh = reinterpret_cast<u16*>(smem + UNION_BYTES);
    int* row_lo = reinterpret_cast<int*>(smem + UNION_BYTES + QH_BYTES);
    int* row_hi = row_lo + 16;
    float* row_qinv = reinterpret_cast<float*>(row_hi + 16);
    float* row_qkm = row_qinv + 16;

    const int tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x;
    const int h = (int)blockIdx.y % hkv;
    const int mt = (int)blockIdx.y / hkv;
    const int b = blockIdx.z;
    const int hq = hkv * group;
    const int rows_total = group * t;
    const int rows = min(16, rows_total - mt * 16);
    const u64* ds = desc + (long long)b * desc_stride;
    const bool dense = split >= splits_c;

    // ---- the query rows, scaled (and un-smoothed, rotated for the compressed part) ----
    for (int i = tid; i < 16 * D; i += NTHREADS) {
        const int rho = i / D, k = i % D;
        float x = 0.0f;
        if (rho < rows) {
            const int R = mt * 16 + rho;
            const int j = h * group + R / t, r = R % t;
            x = q[(((long long)b * hq + j) * t + r) * D + k] * scale;
        }
        qf[i] = x;
    }
    __syncthreads();

    if (dense) {
        // ---- dense split: f32 dot products, one warp per query row ----
        const int m = (int)ds[F_M];
        const int t0 = (split - splits_c) * dchunk;
        const int t1 = min(m, t0 + dchunk);
        const long long dcap = (long long)ds[F_DCAP];
        const u16* dk = reinterpret_cast<const u16*>(ds[F_DK]) + (long long)h * dcap * D;
        const u16* dv = reinterpret_cast<const u16*>(ds[F_DV]) + (long long)h * dcap * D;
        const u32* dpos = reinterpret_cast<const u32*>(ds[F_DPOS]);
        for (int rho = warp; rho < rows; rho += NWARPS) {
            const int R = mt * 16 + rho;
            const int j = h * group + R / t, r = R % t;
            const u32 p = (u32)ds[DESC_FIXED + 2 * hkv + r];
            const long long prow = ((long long)b * hq + j) * t + r;
            float acc[D / 32];
#pragma unroll
            for (int k = 0; k < D / 32; ++k) acc[k] = 0.0f;
            float mx = NEG_INF, l = 0.0f;
            for (int tok = t0; tok < t1; ++tok) {
                const bool vis = visible(dpos[tok], p, window);
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < D / 64; ++k) {
                    const int dim = 64 * k + 2 * lane;
                    const u32 kk = *reinterpret_cast<const u32*>(dk + (long long)tok * D + dim);
                    s += qf[rho * D + dim] * f16_to_f32((u16)(kk & 0xffffu))
                        + qf[rho * D + dim + 1] * f16_to_f32((u16)(kk >> 16));
                }
                s = warp_sum(s) * LOG2E;
                if (dscores != nullptr && lane == 0)
                    dscores[prow * m_max + tok] = vis ? s : NEG_INF;
                if (!vis) continue;
                const float nm = fmaxf(mx, s);
                const float corr = ex2(mx - nm);
                const float pw = ex2(s - nm);
                l = l * corr + pw;
                mx = nm;
#pragma unroll
                for (int k = 0; k < D / 64; ++k) {
                    const int dim = 64 * k + 2 * lane;
                    const u32 vv = *reinterpret_cast<const u32*>(dv + (long long)tok * D + dim);
                    acc[2 * k] = acc[2 * k] * corr + pw * f16_to_f32((u16)(vv & 0xffffu));
                    acc[2 * k + 1] = acc[2 * k + 1] * corr + pw * f16_to_f32((u16)(vv >> 16));
                }
            }
            float* pa = part_acc + (prow * splits + split) * D;
#pragma unroll
            for (int k = 0; k < D / 64; ++k) {
                pa[64 * k + 2 * lane] = acc[2 * k];
                pa[64 * k + 2 * lane + 1] = acc[2 * k + 1];
            }
            if (lane == 0) {
                part_ml[(prow * splits + split) * 2] = mx;
                part_ml[(prow * splits + split) * 2 + 1] = l;
            }
        }
        return;
    }

    // ---- compressed split ----
    const int n = (int)ds[DESC_FIXED + h];
    const u32 last1 = (u32)ds[DESC_FIXED + hkv + h];   // last position + 1, 0 if none
    const long long cap = (long long)ds[F_CAP];
    const u32* pos = reinterpret_cast<const u32*>(ds[F_POS]) + (long long)h * cap;
    const float* kmean = reinterpret_cast<const float*>(ds[F_KMEAN]) + h * D;
    const float* ksmooth = reinterpret_cast<const float*>(ds[F_KSMOOTH]) + h * D;

    // <q, k_mean> * scale per row (before smoothing), one warp per row.
    for (int rho = warp; rho < 16; rho += NWARPS) {
        float s = 0.0f;
        for (int k = lane; k < D; k += 32) s += qf[rho * D + k] * kmean[k];
        s = warp_sum(s);
        if (lane == 0) row_qkm[rho] = s;
    }
    // Visible token range per row: binary searches only when a window is set or the
    // query is older than the newest compressed token.
    if (tid < 16) {
        int lo = 0, hi = 0;
        if (tid < rows) {
            const int R = mt * 16 + tid;
            const u32 p = (u32)ds[DESC_FIXED + 2 * hkv + R % t];
            hi = n;
            if (last1 != 0 && p < last1 - 1) hi = first_after(pos, n, p);
            if (window != 0) lo = min(first_not_older(pos, n, p, window), hi);
        }
        row_lo[tid] = lo;
        row_hi[tid] = hi;
    }
    __syncthreads();  // the <q, k_mean> sums above read qf, rewritten below
    // q / k_smooth, then the key rotation: x <- H (D / sqrt(D)) x, in place.
    for (int i = tid; i < 16 * D; i += NTHREADS) {
        const int k = i % D;
        qf[i] = qf[i] / ksmooth[k] * ksigns[k];
    }
    __syncthreads();
    for (int hs = 1; hs < D; hs <<= 1) {
        for (int i = tid; i < 16 * D / 2; i += NTHREADS) {
            const int rho = i / (D / 2), k = i % (D / 2);
            const int a = ((k & ~(hs - 1)) << 1) | (k & (hs - 1));
            float* x = qf + rho * D;
            const float u = x[a], v = x[a + hs];
            x[a] = u + v;
            x[a + hs] = u - v;
        }
        __syncthreads();
    }
    // Power-of-two normalization to max |q| < 1, then f16.
    for (int rho = warp; rho < 16; rho += NWARPS) {
        float mx = 0.0f;
        for (int k = lane; k < D; k += 32) mx = fmaxf(mx, fabsf(qf[rho * D + k]));
        mx = warp_max(mx);
        int e = 0;
        if (mx > 0.0f) frexpf(mx, &e);
        for (int k = lane; k < D; k += 32) qh[rho * D + k] = f32_to_f16(ldexpf(qf[rho * D + k], -e));
        if (lane == 0) row_qinv[rho] = ldexpf(1.0f, e);
    }
    __syncthreads();
    // The tables, replicated (qf is dead now).
#pragma unroll 8
    for (int i = tid; i < ROW_TAB_BYTES / 8; i += NTHREADS) {
        const int r = i >> 5, q = i & 31;   // row r: 16 pattern replicas, 16 sign replicas
        tab[i] = __ldg(q < REPS ? tabs + r : tabs + 256 + (r & 127));
    }
    if (RES) {
#pragma unroll 8
        for (int i = tid; i < 256 * REPS; i += NTHREADS) tab[ROW_TAB_BYTES / 8 + i] = __ldg(tabs + 384 + i / REPS);
    }

    const int g = lane >> 2, c = lane & 3;
    const u8* trep = smem + 8 * (lane & (REPS - 1));   // this lane's table replica
    // Query fragments (A operand of the score product) for rows g and g + 8.
    u32 qa[KT][4];
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
        const int d0 = (c * KLB + (kt >> 1)) * 8 + 4 * (kt & 1);
        qa[kt][0] = *reinterpret_cast<const u32*>(qh + g * D + d0);
        qa[kt][1] = *reinterpret_cast<const u32*>(qh + (g + 8) * D + d0);
        qa[kt][2] = *reinterpret_cast<const u32*>(qh + g * D + d0 + 2);
        qa[kt][3] = *reinterpret_cast<const u32*>(qh + (g + 8) * D + d0 + 2);
    }
    if (NQ_ROWS8) {
        // Rows 8-15 of the tile are empty: zero A fragments (the compiler keeps no register).
#pragma unroll
        for (int kt = 0; kt < KT; ++kt) qa[kt][1] = qa[kt][3] = 0u;
    }
    const float qinv0 = row_qinv[g], qinv1 = row_qinv[g + 8];
    const float qkm0 = row_qkm[g] * LOG2E, qkm1 = row_qkm[g + 8] * LOG2E;
    const int lo0 = row_lo[g], hi0 = row_hi[g], lo1 = row_lo[g + 8], hi1 = row_hi[g + 8];
    int any_lo = n, any_hi = 0;
    for (int rho = 0; rho < rows; ++rho) {
        if (row_hi[rho] > row_lo[rho]) {
            any_lo = min(any_lo, row_lo[rho]);
            any_hi = max(any_hi, row_hi[rho]);
        }
    }
    __syncthreads();

    const u8* kc = reinterpret_cast<const u8*>(ds[F_KC]) + (long long)h * cap * KROW;
    const u16* ks = reinterpret_cast<const u16*>(ds[F_KS]) + (long long)h * cap;
    const u8* vc = reinterpret_cast<const u8*>(ds[F_VC]) + (long long)h * cap * VROW;
    const u16* vs = reinterpret_cast<const u16*>(ds[F_VS]) + (long long)h * cap;

    // General path: o[j] is the C fragment of n-tile j of O (rows g, g + 8; dims of lane
    // g' = 2c + e, see the merge). NQ_ROWS8: o[mt] is the C fragment of m-tile mt of O^T
    // (value dims as rows, query rows 2c, 2c + 1 as columns).
    float o[NQ_ROWS8 ? MT : NT][4];
#pragma unroll
    for (int j = 0; j < (NQ_ROWS8 ? MT : NT); ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
#if NQ_ROWS8
    // The value shifts' product (softmax_pv_rows8).
    float osh[MTS][4];
#pragma unroll
    for (int j = 0; j < MTS; ++j) osh[j][0] = osh[j][1] = osh[j][2] = osh[j][3] = 0.0f;
#endif
    float m0 = NEG_INF, m1 = NEG_INF, l0 = 0.0f, l1 = 0.0f;

    const int c0 = max(split * chunk, any_lo);
    const int c1 = min(min((split + 1) * chunk, n), any_hi);
    const int tbase = split * chunk;
    // Codes and scales of one 16-token tile, as this lane needs them: key codes of tokens
    // tb+g, tb+g+8; value codes of tb+{2c, 2c+1, 2c+8, 2c+9}; scale pairs of tokens
    // tb + 8 nt + 2c + {0, 1} (4-byte aligned: cap % 64 == 0).
    struct Tile {
        u32 kw[2][(KLANE + 3) / 4];
        u32 vw[4][(VLANE + 3) / 4];
        u32 ks[2], vs[2];
    };
    auto load = [&](Tile& T, int tb) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int tok = tb + g + 8 * e;
            if (tok < n) {
                load_bytes<KLANE, align_of2(KROW, KLANE)>(kc + (long long)tok * KROW + c * KLANE, T.kw[e]);
            } else {
#pragma unroll
                for (int i = 0; i < (KLANE + 3) / 4; ++i) T.kw[e][i] = 0;
            }
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int tok = tb + 2 * c + (e & 1) + 8 * (e >> 1);
            if (tok < n) {
                load_bytes<VLANE, align_of2(VROW, VLANE)>(vc + (long long)tok * VROW + g * VLANE, T.vw[e]);
            } else {
#pragma unroll
                for (int i = 0; i < (VLANE + 3) / 4; ++i) T.vw[e][i] = 0;
            }
        }
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
            const int tok = tb + 8 * nt + 2 * c;
            T.ks[nt] = 0;
            T.vs[nt] = 0;
            if (tok + 1 < n) {
                T.ks[nt] = __ldg(reinterpret_cast<const u32*>(ks + tok));
                T.vs[nt] = __ldg(reinterpret_cast<const u32*>(vs + tok));
            } else if (tok < n) {
                T.ks[nt] = __ldg(ks + tok);
                T.vs[nt] = __ldg(vs + tok);
            }
        }
    };
    // This warp's first tile that reaches c0, then every NWARPS-th; with NQ_PREFETCH the
    // next tile's loads are issued before this tile's arithmetic.
    int tb = tbase + warp * 16;
    if (tb + 16 <= c0) tb += ((c0 - tb - 16) / (NWARPS * 16) + 1) * (NWARPS * 16);
    Tile cur;
    if (tb < c1) load(cur, tb);
    for (; tb < c1; tb += NWARPS * 16) {
        Tile nxt;
        const bool more = tb + NWARPS * 16 < c1;
        if (NQ_PREFETCH && more) load(nxt, tb + NWARPS * 16);
        float kscl[2][2], vscl[2][2];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
            kscl[nt][0] = f16_to_f32((u16)(cur.ks[nt] & 0xffffu));
            kscl[nt][1] = f16_to_f32((u16)(cur.ks[nt] >> 16));
            vscl[nt][0] = f16_to_f32((u16)(cur.vs[nt] & 0xffffu));
            vscl[nt][1] = f16_to_f32((u16)(cur.vs[nt] >> 16));
        }
        const auto& kw = cur.kw;
        const auto& vw = cur.vw;

        // ---- scores: S[16 rows x 16 tokens] = Q . K^T, decoded straight from the codes ----
        float sc[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.0f;
#pragma unroll
        for (int kp = 0; kp < KT / 2; ++kp) {
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                u32 cb[4];
                decode_block<KB>(kw[nt], kp * KB, trep, cb);
                mma16816(sc[nt], qa[2 * kp], cb[0], cb[1]);
                mma16816(sc[nt], qa[2 * kp + 1], cb[2], cb[3]);
            }
        }
#if NQ_ROWS8
        softmax_pv_rows8(sc, tb, c, lo0, hi0, qinv0, qkm0, kscl, vscl, vw, trep, m0, l0, o, osh);
#else
        // ---- online softmax (base 2) over rows g (0) and g + 8 (1) ----
        float mx0 = NEG_INF, mx1 = NEG_INF;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int tok = tb + 8 * nt + 2 * c + e;
                const float s0 = (tok >= lo0 && tok < hi0)
                    ? sc[nt][e] * (qinv0 * kscl[nt][e] * LOG2E) + qkm0 : NEG_INF;
                const float s1 = (tok >= lo1 && tok < hi1)
                    ? sc[nt][2 + e] * (qinv1 * kscl[nt][e] * LOG2E) + qkm1 : NEG_INF;
                sc[nt][e] = s0;
                sc[nt][2 + e] = s1;
                mx0 = fmaxf(mx0, s0);
                mx1 = fmaxf(mx1, s1);
            }
        }
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        const float nm0 = fmaxf(m0, mx0), nm1 = fmaxf(m1, mx1);
        const float corr0 = nm0 == NEG_INF ? 1.0f : ex2(m0 - nm0);
        const float corr1 = nm1 == NEG_INF ? 1.0f : ex2(m1 - nm1);
        m0 = nm0;
        m1 = nm1;
        float ps0 = 0.0f, ps1 = 0.0f;
        u32 pa[4];
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
            float w[4];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                w[e] = nm0 == NEG_INF ? 0.0f : ex2(sc[nt][e] - nm0);
                w[2 + e] = nm1 == NEG_INF ? 0.0f : ex2(sc[nt][2 + e] - nm1);
            }
            ps0 += w[0] + w[1];
            ps1 += w[2] + w[3];
            // A operand of P.V: (row g, tokens 8nt + 2c, +1) and (row g + 8, same tokens).
            pa[2 * nt] = pack_f16x2(w[0] * vscl[nt][0], w[1] * vscl[nt][1]);
            pa[2 * nt + 1] = pack_f16x2(w[2] * vscl[nt][0], w[3] * vscl[nt][1]);
        }
        l0 = l0 * corr0 + ps0;
        l1 = l1 * corr1 + ps1;
        scale_frags(o, corr0, corr0, corr1, corr1);
        // ---- O += P . V, V decoded straight from the codes (rotated space) ----
#pragma unroll
        for (int be = 0; be < VBPT; ++be) {
            u32 cv[4][4];
#pragma unroll
            for (int e = 0; e < 4; ++e) decode_block<VB>(vw[e], be * VB, trep, cv[e]);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const u32 sel = (i & 1) ? 0x7632u : 0x5410u;
                const u32 b0 = __byte_perm(cv[0][i >> 1], cv[1][i >> 1], sel);
                const u32 b1 = __byte_perm(cv[2][i >> 1], cv[3][i >> 1], sel);
                mma16816(o[be * 8 + i], pa, b0, b1);
            }
        }
#endif
        if (NQ_PREFETCH) {
            if (more) cur = nxt;
        } else if (more) {
            load(cur, tb + NWARPS * 16);
        }
    }

    // ---- merge the warps' partials in shared memory (tables are dead now) ----
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    __syncthreads();
    float* mw = mbuf + warp * 16 * D;
#if NQ_ROWS8
    // o[mt]: rows (dims) g and g + 8 of m-tile mt = 4 be + i are coordinates 2i and 2i + 1
    // of the value block g * VBPT + be; columns are query rows 2c, 2c + 1.
    // The block's shift term osh (rows 2c, 2c + 1) is added to each of its coordinates.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        const int be = mt / 4, hb = 2 * (be % 2);
        const int dim = 8 * (g * VBPT + be) + 2 * (mt % 4);
        mw[(2 * c) * D + dim] = o[mt][0] + osh[be / 2][hb];
        mw[(2 * c + 1) * D + dim] = o[mt][1] + osh[be / 2][hb + 1];
        mw[(2 * c) * D + dim + 1] = o[mt][2] + osh[be / 2][hb];
        mw[(2 * c + 1) * D + dim + 1] = o[mt][3] + osh[be / 2][hb + 1];
    }
#else
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int col = 2 * c + e;   // the lane g' = col decoded these dims
            const int dim = 8 * (col * VBPT + j / 8) + (j % 8);
            mw[g * D + dim] = o[j][e];
            mw[(g + 8) * D + dim] = o[j][2 + e];
        }
    }
#endif
    if (c == 0) {
        mml[(warp * 16 + g) * 2] = m0;
        mml[(warp * 16 + g) * 2 + 1] = l0;
        mml[(warp * 16 + g + 8) * 2] = m1;
        mml[(warp * 16 + g + 8) * 2 + 1] = l1;
    }
    __syncthreads();
    for (int i = tid; i < rows * D; i += NTHREADS) {
        const int rho = i / D, k = i % D;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < NWARPS; ++w) mx = fmaxf(mx, mml[(w * 16 + rho) * 2]);
        float acc = 0.0f, l = 0.0f;
        if (mx != NEG_INF) {
#pragma unroll
            for (int w = 0; w < NWARPS; ++w) {
                const float f = ex2(mml[(w * 16 + rho) * 2] - mx);
                acc += f * mbuf[(w * 16 + rho) * D + k];
                l += f * mml[(w * 16 + rho) * 2 + 1];
            }
        }
        const int R = mt * 16 + rho;
        const int j = h * group + R / t, r = R % t;
        const long long prow = ((long long)b * hq + j) * t + r;
        part_acc[(prow * splits + split) * D + k] = acc;
        if (k == 0) {
            part_ml[(prow * splits + split) * 2] = mx;
            part_ml[(prow * splits + split) * 2 + 1] = l;
        }
    }
}

// One CTA of D threads per query row: merge the partials, un-rotate the compressed part,
// add the value mean and the dense part, normalize; then (if asked) overwrite the row's
// dense scores with their softmax weights, which `attend_mass` adds to dense_mass.
extern "C" __global__ void __launch_bounds__(256) attend_combine(
    const u64* __restrict__ desc,
    int desc_stride,
    const float* __restrict__ part_acc,
    const float* __restrict__ part_ml,
    float* __restrict__ dscores,
    const float* __restrict__ vsigns,
    float* __restrict__ out,
    int t,
    int hkv,
    int group,
    int splits_c,
    int splits,
    int m_max,
    int record_mass)
{
    __shared__ float xs[D];
    const int k = threadIdx.x;
    const long long prow = blockIdx.x;
    const int hq = hkv * group;
    const long long b = prow / ((long long)hq * t);
    const int j = (int)((prow / t) % hq);
    const int h = j / group;
    const u64* ds = desc + b * desc_stride;
    const float* ml = part_ml + prow * splits * 2;
    const float* pa = part_acc + prow * splits * D;

    float mx = NEG_INF;
#pragma unroll 8
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, ml[2 * s]);
    float accr = 0.0f, accp = 0.0f, lc = 0.0f, ld = 0.0f;
    if (mx != NEG_INF) {
        // Two loops (compressed, then dense partials), unrolled so that loads overlap.
#pragma unroll 8
        for (int s = 0; s < splits_c; ++s) {
            const float f = ex2(ml[2 * s] - mx);
            accr += f * pa[(long long)s * D + k];
            lc += f * ml[2 * s + 1];
        }
#pragma unroll 4
        for (int s = splits_c; s < splits; ++s) {
            const float f = ex2(ml[2 * s] - mx);
            accp += f * pa[(long long)s * D + k];
            ld += f * ml[2 * s + 1];
        }
    }
    const float l = lc + ld;
    // Un-rotate: x <- (D / sqrt(D)) H x.
    xs[k] = accr;
    __syncthreads();
    for (int hs = 1; hs < D; hs <<= 1) {
        float u = 0.0f, v = 0.0f;
        int a = 0;
        if (k < D / 2) {
            a = ((k & ~(hs - 1)) << 1) | (k & (hs - 1));
            u = xs[a];
            v = xs[a + hs];
        }
        __syncthreads();
        if (k < D / 2) {
            xs[a] = u + v;
            xs[a + hs] = u - v;
        }
        __syncthreads();
    }
    const float* vmean = reinterpret_cast<const float*>(ds[F_VMEAN]) + h * D;
    float y = 0.0f;
    if (l > 0.0f) y = (xs[k] * vsigns[k] + lc * vmean[k] + accp) / l;
    out[prow * D + k] = y;

    if (record_mass) {
        const int m = (int)ds[F_M];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        for (int tok = k; tok < m; tok += D) {
            float* s = dscores + prow * m_max + tok;
            *s = (l > 0.0f && *s != NEG_INF) ? ex2(*s - mx) * inv : 0.0f;
        }
    }
}

// One thread per (sequence b, kv head h, dense token): adds the softmax weights that
// `attend_combine` left in `dweights` for every query head of h's group and every query
// row, in a fixed order, to dense_mass (an atomic add per row would make the sum, and so
// later evictions, depend on the order the CTAs ran in). Grid (ceil(m_max / 256), hkv, B).
extern "C" __global__ void __launch_bounds__(256) attend_mass(
    const u64* __restrict__ desc,
    int desc_stride,
    const float* __restrict__ dweights,
    int t,
    int hkv,
    int group,
    int m_max)
{
    const int tok = blockIdx.x * blockDim.x + threadIdx.x;
    const int h = blockIdx.y;
    const long long b = blockIdx.z;
    const u64* ds = desc + b * desc_stride;
    if (tok >= (int)ds[F_M]) return;
    const long long hq = (long long)hkv * group;
    float sum = 0.0f;
    for (int g = 0; g < group; ++g) {
        const long long row0 = (b * hq + (long long)h * group + g) * t;
        for (int r = 0; r < t; ++r) sum += dweights[(row0 + r) * m_max + tok];
    }
    float* mass = reinterpret_cast<float*>(ds[F_DMASS]) + h * (long long)ds[F_DCAP];
    mass[tok] += sum;
}

#endif
