/* vxbits.h: small inline C helpers of the fast path: byte-order loads and stores, the table
 * hash, the Internet checksum (RFC 1071), the inner-flow hash (RFC 7348 §5) and memory for the
 * hash tables. Plain C rather than Cython so that gcc sees integer code it can vectorise and
 * inline; every function is `static inline`, so each module that includes this header gets
 * its own private copy and nothing is exported. All are pure (no Python objects): the .pxd
 * declares them nogil/noexcept. */
#ifndef VXDP_VXBITS_H
#define VXDP_VXBITS_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include <sys/mman.h>
#if defined(__SSE2__)
#  include <emmintrin.h>
#endif

#if defined(__GNUC__)
#  define VX_LIKELY(x)   __builtin_expect(!!(x), 1)
#  define VX_UNLIKELY(x) __builtin_expect(!!(x), 0)
#  define VX_PREFETCH(p) __builtin_prefetch((p))
#else
#  define VX_LIKELY(x)   (x)
#  define VX_UNLIKELY(x) (x)
#  define VX_PREFETCH(p) ((void)(p))
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#  define VX_LE 1
#else
#  define VX_LE 0
#endif

static inline int vx_likely(int x) { return VX_LIKELY(x); }
static inline int vx_unlikely(int x) { return VX_UNLIKELY(x); }
static inline void vx_prefetch(const void *p) { VX_PREFETCH(p); }

/* A MAC address as a 48-bit integer in network (big-endian) order, so that integer order
   is the order of the 6 bytes: dumps sort by MAC exactly like the reference sorts bytes.
   Reads exactly 6 bytes (no over-read at the end of a short frame). */
static inline uint64_t vx_mac48(const unsigned char *p) {
#if VX_LE && defined(__GNUC__)
    uint32_t hi; uint16_t lo;
    memcpy(&hi, p, 4); memcpy(&lo, p + 4, 2);
    return ((uint64_t)__builtin_bswap32(hi) << 16) | (uint64_t)__builtin_bswap16(lo);
#else
    return ((uint64_t)p[0] << 40) | ((uint64_t)p[1] << 32) | ((uint64_t)p[2] << 24)
         | ((uint64_t)p[3] << 16) | ((uint64_t)p[4] << 8) | (uint64_t)p[5];
#endif
}

static inline void vx_put_mac48(unsigned char *p, uint64_t m) {
    p[0] = (unsigned char)(m >> 40); p[1] = (unsigned char)(m >> 32);
    p[2] = (unsigned char)(m >> 24); p[3] = (unsigned char)(m >> 16);
    p[4] = (unsigned char)(m >> 8);  p[5] = (unsigned char)m;
}

static inline uint32_t vx_be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t vx_be16(const unsigned char *p) {
    return (uint16_t)(((uint16_t)p[0] << 8) | p[1]);
}
static inline void vx_put_be16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 8); p[1] = (unsigned char)v;
}
static inline void vx_put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

/* MurmurHash3's 64-bit finaliser: every key bit reaches every index bit, so MACs that
   differ only in the low bytes (consecutive container MACs: 02:42:c0:a8:37:xx) do not
   cluster in a linear-probing table. The index is taken from the top bits. */
static inline uint64_t vx_mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* RFC 1071 ones' complement sum, native order, in a 64-bit accumulator: 32-bit words are
   widened to 64-bit lanes and added without carries (no adc chain). On x86-64 this is
   SSE2 (always present there), 32 bytes an iteration in four independent accumulators;
   elsewhere 64-bit loads split into halves, which compilers vectorise themselves.
   Measured here on 1.5 kB frames: 7.4 B/cycle vs 6.4 (halves) vs 3.8 (adc chains).
   Native order is fine: the sum is byte-order independent (RFC 1071 §2(B)); see
   vx_csum_be() for combining it with big-endian field values. `p` must start at an
   even offset of the summed region. */
static inline uint64_t vx_csum_add(uint64_t acc, const unsigned char *p, size_t n) {
    uint64_t w;
    uint32_t x;
#if defined(__SSE2__)
    if (n >= 32) {
        __m128i z = _mm_setzero_si128(), s0 = z, s1 = z, s2 = z, s3 = z;
        do {
            __m128i u = _mm_loadu_si128((const __m128i *)p);
            __m128i v = _mm_loadu_si128((const __m128i *)(p + 16));
            s0 = _mm_add_epi64(s0, _mm_unpacklo_epi32(u, z));
            s1 = _mm_add_epi64(s1, _mm_unpackhi_epi32(u, z));
            s2 = _mm_add_epi64(s2, _mm_unpacklo_epi32(v, z));
            s3 = _mm_add_epi64(s3, _mm_unpackhi_epi32(v, z));
            p += 32; n -= 32;
        } while (n >= 32);
        s0 = _mm_add_epi64(_mm_add_epi64(s0, s1), _mm_add_epi64(s2, s3));
        uint64_t r[2];
        _mm_storeu_si128((__m128i *)r, s0);
        acc += r[0] + r[1];
    }
#endif
    {
        uint64_t a = 0, b = 0;
        while (n >= 8) { memcpy(&w, p, 8); a += w & 0xffffffffULL; b += w >> 32; p += 8; n -= 8; }
        acc += a + b;
    }
    if (n >= 4) { memcpy(&x, p, 4); acc += x; p += 4; n -= 4; }
    if (n >= 2) { uint16_t h; memcpy(&h, p, 2); acc += h; p += 2; n -= 2; }
    if (n) {
#if VX_LE
        acc += (uint64_t)p[0];          /* odd byte = high-order byte of a BE word */
#else
        acc += (uint64_t)p[0] << 8;
#endif
    }
    return acc;
}

/* vx_csum_add(acc, src, n) while copying src to dst: TSO segmentation copies each
   payload chunk and needs its sum for the segment's TCP checksum, so one pass over the
   bytes instead of two (memcpy, then a read-back). Same lanes as vx_csum_add. */
static inline uint64_t vx_csum_copy(uint64_t acc, unsigned char *dst,
                                    const unsigned char *src, size_t n) {
#if defined(__SSE2__)
    if (n >= 32) {
        __m128i z = _mm_setzero_si128(), s0 = z, s1 = z, s2 = z, s3 = z;
        do {
            __m128i u = _mm_loadu_si128((const __m128i *)src);
            __m128i v = _mm_loadu_si128((const __m128i *)(src + 16));
            _mm_storeu_si128((__m128i *)dst, u);
            _mm_storeu_si128((__m128i *)(dst + 16), v);
            s0 = _mm_add_epi64(s0, _mm_unpacklo_epi32(u, z));
            s1 = _mm_add_epi64(s1, _mm_unpackhi_epi32(u, z));
            s2 = _mm_add_epi64(s2, _mm_unpacklo_epi32(v, z));
            s3 = _mm_add_epi64(s3, _mm_unpackhi_epi32(v, z));
            src += 32; dst += 32; n -= 32;
        } while (n >= 32);
        s0 = _mm_add_epi64(_mm_add_epi64(s0, s1), _mm_add_epi64(s2, s3));
        uint64_t r[2];
        _mm_storeu_si128((__m128i *)r, s0);
        acc += r[0] + r[1];
    }
#endif
    memcpy(dst, src, n);
    return vx_csum_add(acc, src, n);
}

/* Zeroed memory for hash tables and rx slots. From 2 MiB up: an anonymous mapping
   aligned to 2 MiB with MADV_HUGEPAGE, so a 64 MiB FDB (1M entries) costs one TLB entry
   per 2 MiB instead of per 4 KiB — random lookups otherwise pay a page walk on top of
   the cache miss (twice over under a hypervisor). Free with the same size. */
#define VX_HUGE ((size_t)2 << 20)
static inline size_t vx_huge_len(size_t bytes) {
    return (bytes + VX_HUGE - 1) & ~(VX_HUGE - 1);
}
static inline void *vx_table_alloc(size_t bytes) {
    if (bytes < VX_HUGE) return calloc(1, bytes ? bytes : 1);
    size_t len = vx_huge_len(bytes);
    unsigned char *p = (unsigned char *)mmap(NULL, len + VX_HUGE, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t a = ((uintptr_t)p + VX_HUGE - 1) & ~(uintptr_t)(VX_HUGE - 1);
    size_t head = a - (uintptr_t)p;
    if (head) munmap(p, head);
    if (VX_HUGE - head) munmap((void *)(a + len), VX_HUGE - head);
#ifdef MADV_HUGEPAGE
    madvise((void *)a, len, MADV_HUGEPAGE);
#endif
    return (void *)a;
}
static inline void vx_table_free(void *p, size_t bytes) {
    if (p == NULL) return;
    if (bytes < VX_HUGE) { free(p); return; }
    munmap(p, vx_huge_len(bytes));
}

/* Fold to 16 bits (still native order, not complemented). */
static inline uint16_t vx_csum_fold(uint64_t acc) {
    acc = (acc & 0xffffffffULL) + (acc >> 32);
    acc = (acc & 0xffffffffULL) + (acc >> 32);
    acc = (acc & 0xffffULL) + (acc >> 16);
    acc = (acc & 0xffffULL) + (acc >> 16);
    acc = (acc & 0xffffULL) + (acc >> 16);
    return (uint16_t)acc;
}

/* A native-order sum folded and turned into the network-order (big-endian arithmetic)
   16-bit sum, so it can be combined with sums of header field values. */
static inline uint32_t vx_csum_be(uint64_t acc) {
    uint16_t f = vx_csum_fold(acc);
#if VX_LE
    return (uint32_t)(uint16_t)((f >> 8) | (f << 8));
#else
    return f;
#endif
}


/* dataplane.wire.flow_hash: FNV-1a 32 over wire.flow_key(frame), then murmur3 fmix32.
   The key bytes are hashed in place (IPv4 addresses, protocol, L4 ports when not a
   fragment; IPv6 addresses, next header, flow label, L4 ports when the label is 0;
   otherwise the two MACs) instead of being copied into a key buffer first. */
#define VX_FNV_OFFSET 0x811C9DC5u
#define VX_FNV_PRIME  0x01000193u
static inline uint32_t vx_fnv_bytes(uint32_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= VX_FNV_PRIME; }
    return h;
}
static inline uint32_t vx_fmix32(uint32_t h) {
    h ^= h >> 16; h *= 0x85EBCA6Bu; h ^= h >> 13; h *= 0xC2B2AE35u; h ^= h >> 16;
    return h;
}
static inline uint32_t vx_flow_hash(const unsigned char *f, size_t n) {
    uint32_t h = VX_FNV_OFFSET;
    if (n >= 14 + 20 && f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4) {
        size_t ihl = (size_t)(f[14] & 0x0F) * 4;
        if (ihl >= 20 && n >= 14 + ihl) {
            unsigned char proto = f[23];
            unsigned int frag = (((unsigned int)f[20] << 8) | f[21]) & 0x3FFFu;
            size_t l4 = 14 + ihl;
            h = vx_fnv_bytes(h, f + 26, 8);
            h ^= proto; h *= VX_FNV_PRIME;
            if (frag == 0 && (proto == 6 || proto == 17 || proto == 132) && n >= l4 + 4)
                h = vx_fnv_bytes(h, f + l4, 4);
            return vx_fmix32(h);
        }
    }
    if (n >= 14 + 40 && f[12] == 0x86 && f[13] == 0xDD && (f[14] >> 4) == 6) {
        unsigned char nh = f[20];
        int labelled = (f[15] & 0x0F) | f[16] | f[17];
        h = vx_fnv_bytes(h, f + 22, 32);
        h ^= nh; h *= VX_FNV_PRIME;
        h ^= (unsigned char)(f[15] & 0x0F); h *= VX_FNV_PRIME;
        h = vx_fnv_bytes(h, f + 16, 2);
        if (!labelled && (nh == 6 || nh == 17 || nh == 132) && n >= 54 + 4)
            h = vx_fnv_bytes(h, f + 54, 4);
        return vx_fmix32(h);
    }
    return vx_fmix32(vx_fnv_bytes(h, f, n < 12 ? n : 12));   /* frame[0:12] */
}

/* Monotonic clock for the in-memory benchmarks (no Python call inside the timed loop). */
static inline double vx_now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

#endif /* VXDP_VXBITS_H */
