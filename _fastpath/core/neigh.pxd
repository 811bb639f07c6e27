# The neighbour (ARP) tables of all networks in one table (dataplane/neigh.py is the
# reference): what the ARP proxy answers from.

# Neighbour entry: 16 bytes. key = (slot + 1) << 32 | IPv4 (host order).
ctypedef struct nb_ent:
    uint64_t key
    uint8_t mac[6]
    uint8_t state
    uint8_t _pad

cdef enum:
    NB_MIN_CAP = 16
    NB_KEY_SHIFT = 32

cdef inline uint64_t nb_key(uint32_t slot, uint32_t ip) noexcept nogil:
    return (<uint64_t>(slot + 1) << NB_KEY_SHIFT) | ip

cdef inline nb_ent *nb_find(table_t *t, uint64_t key) noexcept nogil:
    return <nb_ent*>tab_find(t, key, sizeof(nb_ent))

cdef uint64_t nb_purge(sw_t *s, uint32_t slot) noexcept nogil
