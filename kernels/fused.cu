// Fused hop kernels for device buffers: at each hop of a collective one
// pass decodes the received wire slice, reduces it with the local slice in
// f32, and encodes the outgoing slice (and, where the value is final,
// stores it). They mirror src/cpu/scalar.rs bit for bit; the rules are in
// kernels/README.md.
//
// The file includes no header, so NVRTC compiles it with nothing but
// itself (no CUDA toolkit headers at run time), and a host C++ compiler
// builds the very same kernel bodies for the bit-exactness check against
// the Rust host path (RF_HOST; see src/cuda/host.rs). The conversions
// are therefore integer code rather than cvt intrinsics: the intrinsics
// differ from the host in NaN payloads, the integer code does not.
//
// Element codes: 0 f32, 1 f16, 2 bf16 (16-bit values travel as their
// bits). Reduce ops: 0 sum, 1 avg, 2 min, 3 max, 4 prod (ReduceOp's
// order).

#if defined(RF_HOST)
#define RF_FN inline
#else
#define RF_FN __device__ __forceinline__
#endif

typedef unsigned short rf_u16;
typedef unsigned int rf_u32;
typedef unsigned long long rf_u64;

// A 16-byte unit, so the vector body issues one 128-bit load or store.
struct alignas(16) rf_v16 {
    rf_u32 w[4];
};

RF_FN rf_u32 rf_bits(float f) {
#if defined(RF_HOST)
    rf_u32 u;
    __builtin_memcpy(&u, &f, 4);
    return u;
#else
    return __float_as_uint(f);
#endif
}

RF_FN float rf_float(rf_u32 u) {
#if defined(RF_HOST)
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
#else
    return __uint_as_float(u);
#endif
}

RF_FN bool rf_isnan(float v) { return (rf_bits(v) & 0x7fffffffu) > 0x7f800000u; }
RF_FN bool rf_finite32(float v) { return (rf_bits(v) & 0x7f800000u) != 0x7f800000u; }

// ---- conversions (the `half` crate's, which is what the host path uses) ----

// f32 -> f16, round to nearest even; NaN keeps its top payload bits, quiet.
RF_FN rf_u16 rf_f32_to_f16(float value) {
    rf_u32 x = rf_bits(value);
    rf_u32 sign = x & 0x80000000u;
    rf_u32 exp = x & 0x7f800000u;
    rf_u32 man = x & 0x007fffffu;
    if (exp == 0x7f800000u) {
        rf_u32 nan_bit = man == 0 ? 0u : 0x0200u;
        return (rf_u16)((sign >> 16) | 0x7c00u | nan_bit | (man >> 13));
    }
    rf_u32 half_sign = sign >> 16;
    int half_exp = (int)(exp >> 23) - 127 + 15;
    if (half_exp >= 0x1f) return (rf_u16)(half_sign | 0x7c00u);
    if (half_exp <= 0) {
        if (14 - half_exp > 24) return (rf_u16)half_sign;
        man |= 0x00800000u;
        rf_u32 half_man = man >> (14 - half_exp);
        rf_u32 round_bit = 1u << (13 - half_exp);
        if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) half_man += 1;
        return (rf_u16)(half_sign | half_man);
    }
    rf_u32 h = half_sign | ((rf_u32)half_exp << 10) | (man >> 13);
    rf_u32 round_bit = 0x00001000u;
    // A carry out of the mantissa steps the exponent, up to infinity: that
    // is round to nearest even too.
    if ((man & round_bit) != 0 && (man & (3u * round_bit - 1u)) != 0) h += 1;
    return (rf_u16)h;
}

// f16 -> f32, exact; a NaN is made quiet, as F16C's vcvtph2ps does.
RF_FN float rf_f16_to_f32(rf_u16 i) {
    rf_u32 sign = (rf_u32)(i & 0x8000u) << 16;
    rf_u32 exp = i & 0x7c00u;
    rf_u32 man = i & 0x03ffu;
    if (exp == 0x7c00u) return rf_float(sign | 0x7f800000u | (man ? 0x00400000u | (man << 13) : 0u));
    if (exp == 0) {
        // Zero or subnormal: man * 2^-24 is exact in f32.
        float v = (float)man * 5.9604644775390625e-8f;
        return rf_float(sign | rf_bits(v));
    }
    return rf_float(sign | (((exp >> 10) + 112u) << 23) | (man << 13));
}

// f32 -> bf16, round to nearest even; NaN keeps its top bits, made quiet.
RF_FN rf_u16 rf_f32_to_bf16(float value) {
    rf_u32 x = rf_bits(value);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (rf_u16)((x >> 16) | 0x0040u);
    rf_u32 round_bit = 0x00008000u;
    if ((x & round_bit) != 0 && (x & (3u * round_bit - 1u)) != 0) return (rf_u16)((x >> 16) + 1);
    return (rf_u16)(x >> 16);
}

// bf16 -> f32; a NaN is made quiet (__bfloat162float would not).
RF_FN float rf_bf16_to_f32(rf_u16 i) {
    rf_u32 u = (rf_u32)i << 16;
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x00400000u;
    return rf_float(u);
}

// ---- element types ----

struct RfF32 {
    typedef float T;
    RF_FN static float load(float x) { return x; }
    RF_FN static float store(float v) { return v; }
    RF_FN static bool finite(float x) { return rf_finite32(x); }
};
struct RfF16 {
    typedef rf_u16 T;
    RF_FN static float load(rf_u16 x) { return rf_f16_to_f32(x); }
    RF_FN static rf_u16 store(float v) { return rf_f32_to_f16(v); }
    RF_FN static bool finite(rf_u16 x) { return (x & 0x7c00u) != 0x7c00u; }
};
struct RfBf16 {
    typedef rf_u16 T;
    RF_FN static float load(rf_u16 x) { return rf_bf16_to_f32(x); }
    RF_FN static rf_u16 store(float v) { return rf_f32_to_bf16(v); }
    RF_FN static bool finite(rf_u16 x) { return (x & 0x7f80u) != 0x7f80u; }
};

// ---- arithmetic with x86's NaN results ----
//
// The host path runs on x86, where an arithmetic NaN result is the first
// NaN operand made quiet, and an invalid operation (inf - inf, 0 * inf)
// gives the "real indefinite" 0xffc00000. A GPU returns its canonical NaN
// 0x7fffffff instead, so the device spells x86's rule out: it costs one
// compare on the common path. `a` is the operand the host code names
// first (recv in `recv op local`).
RF_FN float rf_x86_nan(float r, float a, float b) {
    if (!rf_isnan(r)) return r;
    if (rf_isnan(a)) return rf_float(rf_bits(a) | 0x00400000u);
    if (rf_isnan(b)) return rf_float(rf_bits(b) | 0x00400000u);
    return rf_float(0xffc00000u);
}

#define RF_SUM 0
#define RF_AVG 1
#define RF_MIN 2
#define RF_MAX 3
#define RF_PROD 4

// `a op b`, as crate::element::Accumulator::combine: min/max turn a NaN
// operand into f32::NAN (0x7fc00000) and otherwise compare as minps/maxps.
template <int OP>
RF_FN float rf_combine(float a, float b) {
    if (OP == RF_SUM || OP == RF_AVG) return rf_x86_nan(a + b, a, b);
    if (OP == RF_PROD) return rf_x86_nan(a * b, a, b);
    if (rf_isnan(a) || rf_isnan(b)) return rf_float(0x7fc00000u);
    if (OP == RF_MIN) return a < b ? a : b;
    return a > b ? a : b;
}

// Avg divides once, at the hop that makes a value final.
RF_FN float rf_div_ranks(float v, rf_u32 ranks) {
    float n = (float)ranks;
    return rf_x86_nan(v / n, v, n);
}

// ---- one element of each hop kind ----
//
// `over` collects "a finite value became an infinite wire value" (the
// FP16 overflow the executor reports).

template <class B, class W>
RF_FN void rf_put(float v, typename W::T* out, bool* over) {
    typename W::T w = W::store(v);
    *out = w;
    if (rf_finite32(v) && !W::finite(w)) *over = true;
}

// What each kernel does per element; `k` is the index into every array.
struct RfArgs {
    const void* recv;  // wire, received
    void* local;       // buffer slice (read, and written by the storing kinds)
    void* out;         // wire, to send
    rf_u32 avg_ranks;  // 0: not Avg's final hop
    int mine_first;    // exchange: this rank is the lower one
    int fin;           // exchange: the result is final (round, send, store)
};

#define RF_ENCODE 0
#define RF_DECODE_REDUCE_ENCODE 1
#define RF_DECODE_REDUCE_STORE_ENCODE 2
#define RF_DECODE_STORE 3
#define RF_DECODE_REDUCE 4
#define RF_EXCHANGE 5

template <class B, class W, int KIND, int OP>
RF_FN void rf_element(const RfArgs& a, rf_u64 k, bool* over) {
    typedef typename B::T BT;
    typedef typename W::T WT;
    const WT* recv = (const WT*)a.recv;
    BT* local = (BT*)a.local;
    WT* out = (WT*)a.out;
    if (KIND == RF_ENCODE) {
        rf_put<B, W>(B::load(local[k]), &out[k], over);
    } else if (KIND == RF_DECODE_REDUCE_ENCODE) {
        rf_put<B, W>(rf_combine<OP>(W::load(recv[k]), B::load(local[k])), &out[k], over);
    } else if (KIND == RF_DECODE_REDUCE_STORE_ENCODE) {
        float v = rf_combine<OP>(W::load(recv[k]), B::load(local[k]));
        if (a.avg_ranks) v = rf_div_ranks(v, a.avg_ranks);
        rf_put<B, W>(v, &out[k], over);
        // The owner keeps the decoded wire value, which is what every other
        // rank decodes in the allgather.
        local[k] = B::store(W::load(out[k]));
    } else if (KIND == RF_DECODE_STORE) {
        local[k] = B::store(W::load(recv[k]));
    } else if (KIND == RF_DECODE_REDUCE) {
        local[k] = B::store(rf_combine<OP>(W::load(recv[k]), B::load(local[k])));
    } else {
        // Recursive doubling: both partners combine the lower rank's wire
        // value first; `mine` is recomputed from local exactly as it was
        // encoded for sending.
        float mine = W::load(W::store(B::load(local[k])));
        float theirs = W::load(recv[k]);
        float v = a.mine_first ? rf_combine<OP>(mine, theirs) : rf_combine<OP>(theirs, mine);
        if (!a.fin) {
            local[k] = B::store(v);
        } else {
            if (a.avg_ranks) v = rf_div_ranks(v, a.avg_ranks);
            rf_put<B, W>(v, &out[k], over);
            local[k] = B::store(W::load(out[k]));
        }
    }
}

// ---- the body every kernel runs: thread `tid` of `threads` ----
//
// Elements go in groups of G: 16 bytes of the widest type (4 where an f32
// is involved, else 8), so when every pointer is 16-byte aligned a group
// is loaded into registers with one load per array (128 or 64 bits),
// worked on there and written back the same way. Groups are dealt out
// grid-stride; the tail (and any misaligned call) goes element by element.
//
// Why not always 8 elements: 8 f32 are two 16-byte units per thread, and
// each of the two store instructions then writes every other 16 bytes of
// the warp's span, half of each 32-byte sector. With 4 f32 a warp's store
// is 512 contiguous bytes. Measured on an H100 (2026-11-26, 256 MiB), with
// 8: decode_store f32<-f16 78% of a device-to-device copy's bandwidth,
// decode_reduce_store_encode 90%.

template <class B, class W>
struct RfShape {
    enum { G = (sizeof(typename B::T) > 2 || sizeof(typename W::T) > 2) ? 4 : 8 };
};

template <class T, int G>
struct alignas(G * sizeof(T)) RfGroup {
    T v[G];
};

struct alignas(8) rf_v8 {
    rf_u32 w[2];
};

// Copies of one group (8 or 16 bytes) between aligned memory and
// registers. The device copies whole rf_v16/rf_v8 units (ld/st.v4 and
// .v2, CUDA's usual float4 idiom); the host build uses memcpy, the one
// copy C++'s aliasing rules allow between these types.
template <int BYTES>
RF_FN void rf_copy(void* dst, const void* src) {
#if defined(RF_HOST)
    __builtin_memcpy(dst, src, BYTES);
#else
    if (BYTES == 16) {
        *(rf_v16*)dst = *(const rf_v16*)src;
    } else {
        *(rf_v8*)dst = *(const rf_v8*)src;
    }
#endif
}

template <class T, int G>
RF_FN void rf_load_group(RfGroup<T, G>* g, const void* base, rf_u64 group) {
    rf_copy<G * sizeof(T)>(g->v, (const char*)base + group * (G * sizeof(T)));
}

template <class T, int G>
RF_FN void rf_store_group(const RfGroup<T, G>* g, void* base, rf_u64 group) {
    rf_copy<G * sizeof(T)>((char*)base + group * (G * sizeof(T)), g->v);
}

RF_FN bool rf_aligned(const void* p) { return p == 0 || ((rf_u64)p & 15) == 0; }

template <class B, class W, int KIND, int OP>
RF_FN void rf_body(RfArgs a, rf_u64 n, int* overflow, rf_u64 tid, rf_u64 threads) {
    const int G = RfShape<B, W>::G;
    const bool reads_recv = KIND != RF_ENCODE;
    const bool reads_local = KIND != RF_DECODE_STORE;
    const bool writes_local = KIND == RF_DECODE_REDUCE_STORE_ENCODE || KIND == RF_DECODE_STORE ||
                              KIND == RF_DECODE_REDUCE || KIND == RF_EXCHANGE;
    const bool writes_out = KIND == RF_ENCODE || KIND == RF_DECODE_REDUCE_ENCODE ||
                            KIND == RF_DECODE_REDUCE_STORE_ENCODE || (KIND == RF_EXCHANGE && a.fin);
    bool over = false;
    rf_u64 groups = 0;
    if (rf_aligned(a.recv) && rf_aligned(a.local) && rf_aligned(a.out)) groups = n / G;
    for (rf_u64 g = tid; g < groups; g += threads) {
        RfGroup<typename W::T, G> recv, out;
        RfGroup<typename B::T, G> local;
        if (reads_recv) rf_load_group(&recv, a.recv, g);
        if (reads_local) rf_load_group(&local, a.local, g);
        RfArgs r = a;
        r.recv = recv.v;
        r.local = local.v;
        r.out = out.v;
        for (int k = 0; k < G; k++) rf_element<B, W, KIND, OP>(r, k, &over);
        if (writes_local) rf_store_group(&local, a.local, g);
        if (writes_out) rf_store_group(&out, a.out, g);
    }
    for (rf_u64 k = groups * G + tid; k < n; k += threads) rf_element<B, W, KIND, OP>(a, k, &over);
    if (over) *overflow = 1;
}

template <class B, class W, int KIND>
RF_FN void rf_dispatch(RfArgs a, int op, rf_u64 n, int* overflow, rf_u64 tid, rf_u64 threads) {
    switch (op) {
        case RF_SUM: rf_body<B, W, KIND, RF_SUM>(a, n, overflow, tid, threads); break;
        case RF_AVG: rf_body<B, W, KIND, RF_AVG>(a, n, overflow, tid, threads); break;
        case RF_MIN: rf_body<B, W, KIND, RF_MIN>(a, n, overflow, tid, threads); break;
        case RF_MAX: rf_body<B, W, KIND, RF_MAX>(a, n, overflow, tid, threads); break;
        default: rf_body<B, W, KIND, RF_PROD>(a, n, overflow, tid, threads); break;
    }
}

// ---- entry points: rf_<kind>_<buffer>_<wire> ----
//
// Every kernel takes the same arguments (unused ones are null or 0), so
// the launcher has one signature:
//   (recv, local, out, n, op, avg_ranks, mine_first, fin, overflow)
// On the host build each is a plain function with the same name and
// arguments, run as one thread.

#if defined(RF_HOST)
#define RF_ENTRY(NAME, B, W, KIND)                                                                    \
    extern "C" void NAME(const void* recv, void* local, void* out, rf_u64 n, int op, rf_u32 avg,      \
                         int mine_first, int fin, int* overflow) {                                      \
        RfArgs a = {recv, local, out, avg, mine_first, fin};                                            \
        rf_dispatch<B, W, KIND>(a, op, n, overflow, 0, 1);                                              \
    }
#else
#define RF_ENTRY(NAME, B, W, KIND)                                                                    \
    extern "C" __global__ void NAME(const void* recv, void* local, void* out, rf_u64 n, int op,       \
                                    rf_u32 avg, int mine_first, int fin, int* overflow) {               \
        RfArgs a = {recv, local, out, avg, mine_first, fin};                                            \
        rf_u64 tid = (rf_u64)blockIdx.x * blockDim.x + threadIdx.x;                                     \
        rf_u64 threads = (rf_u64)gridDim.x * blockDim.x;                                                \
        rf_dispatch<B, W, KIND>(a, op, n, overflow, tid, threads);                                      \
    }
#endif

#define RF_KINDS(BN, WN, B, W)                                                        \
    RF_ENTRY(rf_encode_##BN##_##WN, B, W, RF_ENCODE)                                  \
    RF_ENTRY(rf_decode_reduce_encode_##BN##_##WN, B, W, RF_DECODE_REDUCE_ENCODE)      \
    RF_ENTRY(rf_decode_reduce_store_encode_##BN##_##WN, B, W, RF_DECODE_REDUCE_STORE_ENCODE) \
    RF_ENTRY(rf_decode_store_##BN##_##WN, B, W, RF_DECODE_STORE)                      \
    RF_ENTRY(rf_decode_reduce_##BN##_##WN, B, W, RF_DECODE_REDUCE)                    \
    RF_ENTRY(rf_exchange_##BN##_##WN, B, W, RF_EXCHANGE)

// (buffer, wire) pairs: native f32/f16/bf16, and f32/f16/bf16 buffers over
// the FP16 and BF16 wires.
RF_KINDS(f32, f32, RfF32, RfF32)
RF_KINDS(f32, f16, RfF32, RfF16)
RF_KINDS(f32, bf16, RfF32, RfBf16)
RF_KINDS(f16, f16, RfF16, RfF16)
RF_KINDS(f16, bf16, RfF16, RfBf16)
RF_KINDS(bf16, f16, RfBf16, RfF16)
RF_KINDS(bf16, bf16, RfBf16, RfBf16)
