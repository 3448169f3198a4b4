// Decode of nq-lattice's fixed-rate E8 codes: one thread per block of 8 values.
//
// E8P index (16 bits, little-endian): bits 0-7 pattern p, bits 8-14 sign flips f0..f6
// (f7 = their parity), bit 15 the shift (+1/4 if set, else -1/4):
//     c_i = (-1)^{f_i} base[p][i] + shift
// B2: c = E8P(code[0..2])
// B3: c = E8P(code[0..2]) + words[code[2]] * 0.5
// B4: c = E8P(code[0..2]) + E8P(code[2..4]) * 0.25
// out = scale_row * c. The same operations as nq-lattice's `decode_block`, compiled with
// --fmad=false; every product is exact, so results equal the CPU bit for bit.

__device__ __forceinline__ void e8p_decode(
    unsigned int idx, const float* __restrict__ base, float* c)
{
    const float* b = base + (idx & 0xffu) * 8u;
    unsigned int f = (idx >> 8) & 0x7fu;
    f |= (__popc(f) & 1u) << 7;
    const float shift = (idx & 0x8000u) ? 0.25f : -0.25f;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const unsigned int bits = __float_as_uint(__ldg(b + i)) ^ (((f >> i) & 1u) << 31);
        c[i] = __uint_as_float(bits) + shift;
    }
}

extern "C" __global__ void decode_fixed(
    const unsigned char* __restrict__ codes,
    const float* __restrict__ scales,
    const float* __restrict__ base,
    const float* __restrict__ words,
    float* __restrict__ out,
    long long n_blocks,
    long long blocks_per_row,
    int bits)
{
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < n_blocks;
         b += stride) {
        const float s = scales[b / blocks_per_row];
        const unsigned char* code = codes + b * bits;
        float c[8];
        e8p_decode((unsigned int)code[0] | ((unsigned int)code[1] << 8), base, c);
        if (bits == 3) {
            const float* w = words + (unsigned int)code[2] * 8u;
#pragma unroll
            for (int i = 0; i < 8; ++i) c[i] = c[i] + __ldg(w + i) * 0.5f;
        } else if (bits == 4) {
            float c2[8];
            e8p_decode((unsigned int)code[2] | ((unsigned int)code[3] << 8), base, c2);
#pragma unroll
            for (int i = 0; i < 8; ++i) c[i] = c[i] + c2[i] * 0.25f;
        }
        float4 lo, hi;
        lo.x = s * c[0]; lo.y = s * c[1]; lo.z = s * c[2]; lo.w = s * c[3];
        hi.x = s * c[4]; hi.y = s * c[5]; hi.z = s * c[6]; hi.w = s * c[7];
        float4* o = reinterpret_cast<float4*>(out + b * 8);
        o[0] = lo;
        o[1] = hi;
    }
}
