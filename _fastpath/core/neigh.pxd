# The neighbour tables of all networks, IPv4 and IPv6, in one table (dataplane/neigh.py is the
# reference): what the proxy answers ARP requests and Neighbor Solicitations from.

# Neighbour entry: 40 bytes. IPv4: key = (slot + 1) << 32 | address (host order), exact.
# IPv6: key = bit 63 | a 63-bit hash of (slot, address), the address and slot kept in the
# entry and compared on lookup (a different address with the same key is a miss, and one
# cannot be added: nb_api_set refuses it).
ctypedef struct nb_ent:
    uint64_t key
    uint8_t mac[6]
    uint8_t state
    uint8_t v6
    uint32_t slot
    uint8_t addr[16]             # IPv6 entries: the address

cdef enum:
    NB_MIN_CAP = 16
    NB_KEY_SHIFT = 32

cdef inline uint64_t nb_key(uint32_t slot, uint32_t ip) noexcept nogil:
    return (<uint64_t>(slot + 1) << NB_KEY_SHIFT) | ip

cdef inline uint64_t nb_key6(uint32_t slot, const uint8_t *a) noexcept nogil:
    """The key of IPv6 address `a` (16 bytes) in network `slot`."""
    cdef uint64_t hi, lo
    memcpy(&hi, a, 8)
    memcpy(&lo, a + 8, 8)
    return (<uint64_t>1 << 63) | (vx_mix64(hi ^ vx_mix64(lo + (<uint64_t>slot << 1) + 1)) >> 1)

cdef inline nb_ent *nb_find(table_t *t, uint64_t key) noexcept nogil:
    return <nb_ent*>tab_find(t, key, sizeof(nb_ent))

cdef inline bint nb_is(const nb_ent *e, uint32_t slot, const uint8_t *a) noexcept nogil:
    """Is IPv6 entry `e` the one of address `a` in network `slot`?"""
    return e.slot == slot and memcmp(e.addr, a, 16) == 0

cdef inline nb_ent *nb_find6(table_t *t, uint32_t slot, const uint8_t *a) noexcept nogil:
    cdef nb_ent *e = nb_find(t, nb_key6(slot, a))
    return e if e != NULL and nb_is(e, slot, a) else NULL

cdef void nb_addr(const nb_ent *e, uint8_t *out) noexcept nogil
cdef uint64_t nb_purge(sw_t *s, uint32_t slot) noexcept nogil
