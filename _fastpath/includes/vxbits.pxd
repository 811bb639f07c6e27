# Declarations of vxbits.h (byte order, table hash, RFC 1071 checksum, flow hash, table memory).
# The C lives in the header; see there for why each function is written the way it is.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "vxbits.h" nogil:
    int vx_likely(int x) noexcept
    int vx_unlikely(int x) noexcept
    void vx_prefetch(const void *p) noexcept
    uint64_t vx_mac48(const unsigned char *p) noexcept
    void vx_put_mac48(unsigned char *p, uint64_t m) noexcept
    uint32_t vx_be32(const unsigned char *p) noexcept
    uint16_t vx_be16(const unsigned char *p) noexcept
    void vx_put_be16(unsigned char *p, uint32_t v) noexcept
    void vx_put_be32(unsigned char *p, uint32_t v) noexcept
    uint64_t vx_mix64(uint64_t x) noexcept
    uint64_t vx_csum_add(uint64_t acc, const unsigned char *p, size_t n) noexcept
    uint64_t vx_csum_copy(uint64_t acc, unsigned char *dst, const unsigned char *src,
                          size_t n) noexcept
    uint16_t vx_csum_fold(uint64_t acc) noexcept
    uint32_t vx_csum_be(uint64_t acc) noexcept
    uint32_t vx_flow_hash(const unsigned char *f, size_t n) noexcept
    double vx_now_ns() noexcept
    void *vx_table_alloc(size_t bytes) noexcept
    void vx_table_free(void *p, size_t bytes) noexcept
