# Trace records (Switch._record / Switch.trace_drain in the reference): a bounded ring whose
# overflow is counted (trace_lost), never waited on.


cdef inline void tflag(sw_t *s, uint8_t flag) noexcept nogil:
    """A decision that leaves no output, for the trace record (Switch._flag)."""
    if vx_unlikely(s.tr.on) and s.tr.tf_n < TRACE_FLAGS:
        s.tr.tf[s.tr.tf_n] = flag
        s.tr.tf_n += 1


cdef int trace_alloc(trace_t *t) noexcept nogil:
    """The trace ring is only allocated the first time tracing is switched on."""
    if t.rec != NULL:
        return 0
    t.rec = <trace_rec*>calloc(TRACE_RING_C, sizeof(trace_rec))
    t.data = <uint8_t*>vx_table_alloc(<size_t>TRACE_RING_C * TRACE_SNAP_C)
    t.out_cap = TRACE_RING_C
    t.out = <trace_out*>malloc(t.out_cap * sizeof(trace_out))
    if t.rec == NULL or t.data == NULL or t.out == NULL:
        trace_free(t)
        return -1
    return 0


cdef void trace_free(trace_t *t) noexcept nogil:
    free(t.rec)
    vx_table_free(t.data, <size_t>TRACE_RING_C * TRACE_SNAP_C)
    free(t.out)
    t.rec = NULL
    t.data = NULL
    t.out = NULL
    t.out_cap = 0


cdef void trace_record(sw_t *s, double now, uint8_t src_kind, int64_t src,
                       const uint8_t *saddr, int32_t vni, const uint8_t *data, uint32_t n,
                       int reason, uint32_t first_out) noexcept nogil:
    """Switch._record: one record per frame or datagram; the data cut at TRACE_SNAP bytes."""
    cdef trace_t *t = &s.tr
    cdef trace_rec *r
    cdef trace_out *grown
    cdef uint32_t i, k, ncap
    cdef uint32_t nout = s.n_out - first_out
    if t.count >= TRACE_RING_C:
        t.lost += 1
        return
    if t.out_n + nout > t.out_cap:
        ncap = t.out_cap
        while t.out_n + nout > ncap:
            ncap *= 2
        grown = <trace_out*>realloc(t.out, ncap * sizeof(trace_out))
        if grown == NULL:
            t.lost += 1
            return
        t.out = grown
        t.out_cap = ncap
    r = &t.rec[t.count]
    r.now = now
    r.src = src
    if saddr != NULL:
        memcpy(r.saddr, saddr, 16)
    r.src_kind = src_kind
    r.vni = vni
    r.length = n
    r.snap = n if n < TRACE_SNAP_C else TRACE_SNAP_C
    r.reason = <int8_t>reason
    r.nflags = t.tf_n
    for i in range(t.tf_n):
        r.flags[i] = t.tf[i]
    memcpy(t.data + <size_t>t.count * TRACE_SNAP_C, data, r.snap)
    r.out_start = t.out_n
    r.out_count = nout
    for i in range(nout):
        k = t.out_n + i
        t.out[k].port = s.out[first_out + i].port
        t.out[k].sport = s.out[first_out + i].sport
        if t.out[k].port < 0:
            memcpy(t.out[k].addr, s.rem.r[s.out[first_out + i].rid].addr, 16)
    t.out_n += nout
    t.count += 1


cdef list trace_api_drain(Switch sw):
    """Records since the last call: ``(now, source, vni, length, data, verdict, outputs,
    flags)``, exactly as ``dataplane.switch.Switch.trace_drain``."""
    cdef trace_t *t = &sw.s.tr
    cdef uint32_t i, j
    cdef trace_rec *r
    cdef trace_out *o
    recs = []
    try:
        for i in range(t.count):
            r = &t.rec[i]
            if r.src_kind == LOC_PORT:
                source = f"port:{r.src}"
            else:
                source = str(sw._addr(r.saddr))
            outputs = []
            for j in range(r.out_start, r.out_start + r.out_count):
                o = &t.out[j]
                if o.port >= 0:
                    outputs.append(("port", o.port))
                else:
                    outputs.append(("vtep", str(sw._addr(o.addr)), o.sport))
            recs.append((r.now, source, r.vni, r.length,
                         PyBytes_FromStringAndSize(
                             <char*>(t.data + <size_t>i * TRACE_SNAP_C), r.snap),
                         DROP_REASONS[r.reason] if r.reason >= 0 else "",
                         tuple(outputs),
                         tuple([_TF_NAMES[r.flags[j]] for j in range(r.nflags)])))
    finally:
        t.count = 0
        t.out_n = 0
    return recs
