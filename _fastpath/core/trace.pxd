# Trace records for `vxdp trace` / `vxdp capture` (dataplane/trace.py renders them; the
# reference's Switch._record is the model). Off by default: one predictable branch per frame.

# Fixed part of a record; the data snapshot is in trace_t.data at index * TRACE_SNAP_C, the
# outputs in trace_t.out[out_start : out_start + out_count].
ctypedef struct trace_rec:
    double now
    int64_t src                  # port id as named by the caller (LOC_PORT)
    uint8_t saddr[16]            # the VTEP it came from (LOC_IP)
    int32_t vni                  # -1 when unknown
    uint32_t length
    uint32_t out_start
    uint32_t out_count
    uint16_t snap
    int8_t reason                # drop reason index, -1 = forwarded
    uint8_t src_kind             # LOC_PORT / LOC_IP
    uint8_t nflags
    uint8_t flags[TRACE_FLAGS]

ctypedef struct trace_out:
    int32_t port                 # >= 0 port, -1 underlay
    uint16_t sport
    uint8_t addr[16]             # underlay: the VTEP sent to

ctypedef struct trace_t:
    uint8_t on
    uint8_t tf_n                 # flags of the frame being processed
    uint8_t tf[TRACE_FLAGS]
    trace_rec *rec               # TRACE_RING_C records, allocated on first use
    uint8_t *data                # TRACE_RING_C * TRACE_SNAP_C
    uint32_t count
    uint64_t lost
    trace_out *out
    uint32_t out_n
    uint32_t out_cap

cdef int trace_alloc(trace_t *t) noexcept nogil
cdef void trace_free(trace_t *t) noexcept nogil
cdef void trace_record(sw_t *s, double now, uint8_t src_kind, int64_t src,
                       const uint8_t *saddr, int32_t vni, const uint8_t *data, uint32_t n,
                       int reason, uint32_t first_out) noexcept nogil
