# Declarations of vxsock.h: addresses of either family, per-source-port UDP sockets for
# UDP_SEGMENT sends, the UDP_GRO control message, writev() to a TAP. The C lives in the header.

from libc.stdint cimport uint8_t, uint16_t, uint32_t

from _fastpath.includes.libc_net cimport ssize_t, socklen_t, iovec, msghdr, cmsghdr

cdef extern from "vxsock.h" nogil:
    ctypedef union vx_sockaddr:
        pass
    bint vx_is_v4mapped(const uint8_t *a)
    socklen_t vx_sockaddr_set(vx_sockaddr *sa, const uint8_t *a, uint16_t port)
    bint vx_sockaddr_get(const vx_sockaddr *sa, uint8_t *a)
    int vx_gso_socket(const uint8_t *local, uint16_t sport, int sndbuf)
    ssize_t vx_send_gso(int fd, const uint8_t *dst, uint16_t dport, iovec *iov, int cnt,
                        uint16_t gso_size, uint8_t tos, uint8_t ttl)
    ssize_t vx_send_one(int fd, const uint8_t *dst, uint16_t dport, const void *data,
                        size_t len, uint8_t tos, uint8_t ttl)
    size_t VX_TX_CMSG_SPACE
    void vx_tos_ttl(msghdr *m, cmsghdr *c, bint v6, uint8_t tos, uint8_t ttl)
    int vx_set_df(int fd, int df)
    size_t VX_RX_CMSG_SPACE
    void vx_rx_cmsgs(msghdr *m, uint32_t *gso, uint8_t *tos)
    ssize_t vx_writev(int fd, const iovec *iov, int cnt)
    void vx_close(int fd)
