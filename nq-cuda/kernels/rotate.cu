// Randomized Hadamard transform of one power-of-two block of every row, in shared memory.
//
// forward: x <- H (D/sqrt(n)) x   (signs scaled on load, then unnormalized butterflies)
// inverse: x <- (D/sqrt(n)) H x   (butterflies, then signs scaled on store)
//
// The same sequence as nq-hadamard's `Diag::Pre` / `Diag::Post`, so results agree with the
// CPU within the FWHT's rounding bound (the butterfly order differs).
//
// Layout: blockDim = (threads_per_row, rows_per_block). Row r of the batch is
// buf[r * row_stride + offset .. + size]. Shared memory holds rows_per_block * size floats.
// `size` is a power of two >= 8; `scaled[i] = sign_i / sqrt(size)`.

extern "C" __global__ void rht_rows(
    float* __restrict__ buf,
    long long n_rows,
    long long row_stride,
    int offset,
    int size,
    const float* __restrict__ scaled,
    int inverse)
{
    extern __shared__ float sh[];
    const int tx = threadIdx.x;
    const int nt = blockDim.x;
    float* s = sh + threadIdx.y * size;
    const long long row = (long long)blockIdx.x * blockDim.y + threadIdx.y;
    const bool valid = row < n_rows;
    float* x = buf + (valid ? row : 0) * row_stride + offset;

    if (valid) {
        if (inverse) {
            for (int i = tx; i < size; i += nt) s[i] = x[i];
        } else {
            for (int i = tx; i < size; i += nt) s[i] = x[i] * scaled[i];
        }
    }
    __syncthreads();
    const int half = size >> 1;
    for (int h = 1; h < size; h <<= 1) {
        if (valid) {
            for (int k = tx; k < half; k += nt) {
                const int i = ((k & ~(h - 1)) << 1) | (k & (h - 1));
                const float a = s[i];
                const float b = s[i + h];
                s[i] = a + b;
                s[i + h] = a - b;
            }
        }
        __syncthreads();
    }
    if (valid) {
        if (inverse) {
            for (int i = tx; i < size; i += nt) x[i] = s[i] * scaled[i];
        } else {
            for (int i = tx; i < size; i += nt) x[i] = s[i];
        }
    }
}
