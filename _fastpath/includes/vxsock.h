/* vxsock.h: socket helpers of the fast path's offload paths: the per-source-port UDP sockets
 * that send with UDP_SEGMENT, the UDP_GRO control message, writev() to a TAP. cmsg-macro and
 * struct-initialiser code that Cython would only obscure; all `static inline`, errno left as
 * the failing call set it. */
#ifndef VXDP_VXSOCK_H
#define VXDP_VXSOCK_H

#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <linux/filter.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
#include <stdint.h>
#ifndef SOL_UDP
#  define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#  define UDP_SEGMENT 103        /* <linux/udp.h>: send-side UDP GSO, since 4.18 */
#endif
#ifndef UDP_GRO
#  define UDP_GRO 104            /* receive-side UDP GRO, since 5.0 */
#endif

/* An underlay address of either family: IPv4 kept IPv4-mapped (::ffff:a.b.c.d, RFC 4291
   §2.5.5.2) in the 16 bytes every part of the core uses, made into the sockaddr of its own
   family here. */
typedef union {
    struct sockaddr sa;
    struct sockaddr_in v4;
    struct sockaddr_in6 v6;
} vx_sockaddr;

static inline int vx_is_v4mapped(const uint8_t *a) {
    static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    return memcmp(a, pfx, 12) == 0;
}

/* Fill `sa` for address `a` (16 bytes) and UDP port `port` (host order); returns its
   length. IPv4-mapped addresses become AF_INET. */
static inline socklen_t vx_sockaddr_set(vx_sockaddr *sa, const uint8_t *a, uint16_t port) {
    memset(sa, 0, sizeof *sa);
    if (vx_is_v4mapped(a)) {
        sa->v4.sin_family = AF_INET;
        sa->v4.sin_port = htons(port);
        memcpy(&sa->v4.sin_addr.s_addr, a + 12, 4);
        return (socklen_t)sizeof sa->v4;
    }
    sa->v6.sin6_family = AF_INET6;
    sa->v6.sin6_port = htons(port);
    memcpy(&sa->v6.sin6_addr, a, 16);
    return (socklen_t)sizeof sa->v6;
}

/* The 16-byte form of a received source address; 0 if it is neither family. */
static inline int vx_sockaddr_get(const vx_sockaddr *sa, uint8_t *a) {
    if (sa->sa.sa_family == AF_INET) {
        memset(a, 0, 10);
        a[10] = 0xFF;
        a[11] = 0xFF;
        memcpy(a + 12, &sa->v4.sin_addr.s_addr, 4);
        return 1;
    }
    if (sa->sa.sa_family == AF_INET6) {
        memcpy(a, &sa->v6.sin6_addr, 16);
        return 1;
    }
    return 0;
}

#ifndef IPV6_AUTOFLOWLABEL
#  define IPV6_AUTOFLOWLABEL 70  /* <linux/in6.h> */
#endif

/* A UDP socket that sends from local:sport and never receives (`local` 16 bytes, IPv4-
   mapped for IPv4). RFC 7348 §5 wants the outer source port to follow the inner flow (the
   kernel's udp_flow_src_port); a UDP socket can only send from its bound port, so UDP GSO
   needs one socket per source port in use. A classic BPF program `ret #0` drops everything
   addressed to it, attached before bind() so that nothing can queue in between; its
   receive buffer is the minimum. IPv4: DF clear, like the raw path and the kernel's vxlan
   without `df set`. IPv6: no automatic flow label (udp_tunnel6_xmit_skb writes the
   configured one, 0 by default), IPv6 only. Returns the fd, or -1 with errno set
   (EADDRINUSE: someone owns that port). */
static inline int vx_gso_socket(const uint8_t *local, uint16_t sport, int sndbuf) {
    vx_sockaddr a;
    socklen_t alen = vx_sockaddr_set(&a, local, sport);
    struct sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
    struct sock_fprog prog = {1, &drop_all};
    int pmtu = IP_PMTUDISC_DONT, zero = 0, one = 1, e;
    int fd = socket(a.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (a.sa.sa_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, &zero, sizeof zero);
    }
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) < 0
            || bind(fd, &a.sa, alen) < 0) {
        e = errno; close(fd); errno = e;
        return -1;
    }
    if (a.sa.sa_family == AF_INET)
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &zero, sizeof zero);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    return fd;
}

/* The outer TOS and TTL of one send, as IP_TOS / IP_TTL control messages (ip_cmsg_send),
   or IPV6_TCLASS / IPV6_HOPLIMIT for an IPv6 socket (ip6_datagram_send_ctl): the kernel's
   vxlan sets them per packet (RFC 6040 ECN, `tos`/`ttl` inherit), and a UDP socket's own
   settings would be one value for every flow. Appends to `m`'s control buffer, which must
   have VX_TX_CMSG_SPACE bytes left. */
#define VX_TX_CMSG_SPACE ((size_t)(2 * CMSG_SPACE(sizeof(int))))
static inline void vx_tos_ttl(struct msghdr *m, struct cmsghdr *c, int v6, uint8_t tos,
                              uint8_t ttl) {
    int v = tos;
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    c->cmsg_type = v6 ? IPV6_TCLASS : IP_TOS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &v, sizeof v);
    c = CMSG_NXTHDR(m, c);
    v = ttl;
    c->cmsg_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
    c->cmsg_type = v6 ? IPV6_HOPLIMIT : IP_TTL;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &v, sizeof v);
}

/* DF on a UDP socket's datagrams: Linux has no per-datagram DF, so a socket's
   IP_MTU_DISCOVER is switched when a datagram needs the other setting (DO: DF set and
   EMSGSIZE past the path MTU; DONT: DF clear, the kernel fragments). IPv4 only: IPv6 has
   no DF (the kernel's vxlan ignores `df` for an IPv6 underlay). */
static inline int vx_set_df(int fd, int df) {
    int v = df ? IP_PMTUDISC_DO : IP_PMTUDISC_DONT;
    return setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof v);
}

/* One sendmsg() carrying `cnt` iovecs that the kernel cuts into datagrams of `gso_size`
   bytes (the last may be shorter) with the UDP_SEGMENT control message: one trip
   through the UDP/IP stack for up to 64 datagrams (udp_send_skb → GSO). `dst` is 16
   bytes, IPv4-mapped for IPv4. */
static inline ssize_t vx_send_gso(int fd, const uint8_t *dst, uint16_t dport,
                                  struct iovec *iov, int cnt, uint16_t gso_size,
                                  uint8_t tos, uint8_t ttl) {
    vx_sockaddr a;
    union { char buf[CMSG_SPACE(sizeof(uint16_t)) + VX_TX_CMSG_SPACE];
            struct cmsghdr align; } ctl;
    struct msghdr m;
    struct cmsghdr *c;
    ssize_t r;
    memset(&ctl, 0, sizeof ctl);
    memset(&m, 0, sizeof m);
    m.msg_name = &a;
    m.msg_namelen = vx_sockaddr_set(&a, dst, dport);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)cnt;
    m.msg_control = ctl.buf;
    m.msg_controllen = sizeof ctl.buf;
    c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &gso_size, sizeof gso_size);
    vx_tos_ttl(&m, CMSG_NXTHDR(&m, c), a.sa.sa_family == AF_INET6, tos, ttl);
    do { r = sendmsg(fd, &m, MSG_DONTWAIT); } while (r < 0 && errno == EINTR);
    return r;
}

/* One datagram on a GSO socket without UDP_SEGMENT: the fallback when the kernel
   refuses a GSO send, and the way out for a datagram too big for the path. With DF clear
   (IP_PMTUDISC_DONT; IPv6 sources always may fragment) an oversized one is fragmented
   like the kernel's vxlan does without `df set` (a raw header-including socket refuses it
   with EMSGSIZE instead). */
static inline ssize_t vx_send_one(int fd, const uint8_t *dst, uint16_t dport,
                                  const void *data, size_t len, uint8_t tos, uint8_t ttl) {
    vx_sockaddr a;
    struct iovec v;
    union { char buf[VX_TX_CMSG_SPACE]; struct cmsghdr align; } ctl;
    struct msghdr m;
    ssize_t r;
    v.iov_base = (void *)data;
    v.iov_len = len;
    memset(&ctl, 0, sizeof ctl);
    memset(&m, 0, sizeof m);
    m.msg_name = &a;
    m.msg_namelen = vx_sockaddr_set(&a, dst, dport);
    m.msg_iov = &v;
    m.msg_iovlen = 1;
    m.msg_control = ctl.buf;
    m.msg_controllen = sizeof ctl.buf;
    vx_tos_ttl(&m, CMSG_FIRSTHDR(&m), a.sa.sa_family == AF_INET6, tos, ttl);
    do { r = sendmsg(fd, &m, MSG_DONTWAIT); } while (r < 0 && errno == EINTR);
    return r;
}

/* Room for the control messages of one received buffer: UDP_GRO's segment size and the
   outer TOS (IP_RECVTOS, one byte) or IPv6 traffic class (IPV6_RECVTCLASS, an int). */
#define VX_RX_CMSG_SPACE ((size_t)(2 * CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(int))))

/* What the control messages of a received buffer say: the segment size of a buffer that UDP
   GRO glued together (udp_cmsg_recv; 0 if it is a single datagram) and the outer TOS / traffic
   class (ip_cmsg_recv_tos; GRO never glues datagrams whose TOS or TTL differ, so it is every
   segment's). */
static inline void vx_rx_cmsgs(struct msghdr *m, uint32_t *gso, uint8_t *tos) {
    struct cmsghdr *c;
    int v;
    *gso = 0;
    *tos = 0;
    if (m->msg_controllen == 0) return;
    for (c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            memcpy(&v, CMSG_DATA(c), sizeof v);
            *gso = v > 0 ? (uint32_t)v : 0;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
            *tos = *(const uint8_t *)CMSG_DATA(c);
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
            memcpy(&v, CMSG_DATA(c), sizeof v);
            *tos = (uint8_t)v;
        }
    }
}

static inline ssize_t vx_writev(int fd, const struct iovec *iov, int cnt) {
    ssize_t r;
    do { r = writev(fd, iov, cnt); } while (r < 0 && errno == EINTR);
    return r;
}

static inline void vx_close(int fd) { close(fd); }

#endif /* VXDP_VXSOCK_H */
