# libc declarations for the fast path's burst I/O (DESIGN.md §3: C declarations live here).
#
# Only what the fast path uses: read()/write() on TAP fds, recvmmsg() on the UDP socket,
# sendmmsg() on the raw IPPROTO_RAW socket, and the address structs. recvmmsg/sendmmsg are
# GNU extensions: <sys/socket.h> declares them under _GNU_SOURCE, which Python.h (pyconfig.h)
# defines before any other header is included.

from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef extern from "<sys/types.h>" nogil:
    ctypedef long ssize_t

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t readv(int fd, const iovec *iov, int iovcnt)

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr *CMSG_FIRSTHDR(msghdr *m)

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags,
                 timespec *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)

    enum:
        AF_INET
        MSG_DONTWAIT
        MSG_TRUNC
        MSG_CTRUNC

cdef extern from "<netinet/in.h>" nogil:
    ctypedef uint16_t in_port_t
    ctypedef uint32_t in_addr_t

    struct in_addr:
        in_addr_t s_addr

    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr

cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t hostlong)
    uint16_t htons(uint16_t hostshort)
    uint32_t ntohl(uint32_t netlong)
    uint16_t ntohs(uint16_t netshort)

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)

cdef extern from "<errno.h>" nogil:
    int errno
    enum:
        EAGAIN
        EWOULDBLOCK
        EINTR
        EBADF
        EBADFD
        EIO
        ENODEV
        ENXIO
        EMSGSIZE
        EINVAL
        ENOBUFS
