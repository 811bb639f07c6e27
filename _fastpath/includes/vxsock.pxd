# Declarations of vxsock.h: per-source-port UDP sockets for UDP_SEGMENT sends, the UDP_GRO
# control message, writev() to a TAP. The C lives in the header.

from libc.stdint cimport uint16_t, uint32_t

from _fastpath.includes.libc_net cimport ssize_t, iovec, msghdr

cdef extern from "vxsock.h" nogil:
    int vx_gso_socket(uint32_t local_be, uint16_t sport, int sndbuf)
    ssize_t vx_send_gso(int fd, uint32_t dst_be, uint16_t dport, iovec *iov, int cnt,
                        uint16_t gso_size)
    ssize_t vx_send_one(int fd, uint32_t dst_be, uint16_t dport, const void *data,
                        size_t len)
    size_t VX_GRO_CMSG_SPACE
    uint32_t vx_gro_size(msghdr *m)
    ssize_t vx_writev(int fd, const iovec *iov, int cnt)
    void vx_close(int fd)
