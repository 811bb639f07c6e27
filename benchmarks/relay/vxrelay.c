/* vxrelay: the floor of a userspace VTEP on this machine, for bench_e2e.
 *
 * One TAP, one UDP socket, one remote, a fixed VXLAN header: no tables, no learning, no ARP
 * proxy, no Python. It makes the same system calls per burst as vxdp's fast path and opens its
 * TAP and sockets with the same settings, and it does the same per-frame arithmetic (the
 * inner-flow hash for the source port, the outer checksums, partial inner checksums
 * completed) with vxdp's own inline helpers (_fastpath/includes/vxbits.h), so the latency it
 * adds per crossing is what any userspace VTEP pays for the wake-ups, system calls and copies:
 *
 *   TAP readable:  read() until EAGAIN or BURST frames (IFF_VNET_HDR with a 12-byte header,
 *                  TUNSETOFFLOAD csum|tso4|tso6 as vxdp asks; a partial checksum is finished
 *                  as skb_checksum_help would), outer IPv4 + UDP headers with both checksums
 *                  into the headroom, one sendmmsg() on an IPPROTO_RAW socket;
 *   UDP readable:  recvmmsg() of BURST datagrams on the socket bound to LOCAL:4789 (UDP_GRO
 *                  and IP_RECVTOS on, as vxdp's; a GRO buffer is cut at its segment size),
 *                  each frame written to the TAP behind a zero virtio_net_hdr with writev().
 *
 * A GSO super-frame from the TAP is dropped (counted): this relay measures round trips of
 * small frames, not throughput. The TAP is created here and left in this namespace; the
 * caller moves it into the container's namespace and configures it (the fd stays valid), as
 * vxdp does. It is no bridge: the containers need static neighbour entries for each other.
 *
 *   vxrelay TAPNAME LOCAL REMOTE [VNI] [BUSY_POLL_US]
 *
 * BUSY_POLL_US: after a burst, keep polling both fds until nothing arrived for that long
 * (sched_yield() between empty rounds), 2 ms at most, as vxdp's [vtep] busy_poll.
 *
 * Prints "ready" on stdout once the TAP exists and the sockets are bound; runs until SIGTERM
 * or SIGINT, then prints its counters on stderr and exits 0.
 *
 * Built by bench_e2e (and `make relay`):  cc -O2 -I_fastpath/includes -o ... vxrelay.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "vxbits.h"

#ifndef SOL_UDP
#  define SOL_UDP 17
#endif
#ifndef UDP_GRO
#  define UDP_GRO 104
#endif

#define BURST 64
#define VNET 12                      /* virtio_net_hdr_mrg_rxbuf, as vxdp's TAPs */
#define HEADROOM 64
#define SLOT (HEADROOM + 65536 + 64)
#define OUTER 36                     /* IPv4 20 + UDP 8 + VXLAN 8 */
#define VXLAN_PORT 4789
#define POLL_LIMIT_NS 2e6            /* vxdp's BUSY_POLL_SLICE */
#define CMSG_ROOM 64

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static uint8_t *slots;               /* BURST rx slots: TAP frames and UDP datagrams */
static uint8_t cmsgs[BURST][CMSG_ROOM];
static uint32_t local_be, remote_be, vni = 4097;
static uint64_t n_tap_rx, n_tap_tx, n_ul_rx, n_ul_tx, n_gso_dropped, n_bad, n_errors;

static uint16_t csum_field(uint64_t native_sum)   /* complemented, network order in memory */
{
    return (uint16_t)~vx_csum_fold(native_sum);
}

/* IPv4 + UDP + VXLAN in front of the `n`-byte frame at `f` (the raw socket's datagram): what
   vxdp's encap() and outer_csum() write for `df unset`, ttl 64, tos 0. */
static uint8_t *encap(uint8_t *f, uint32_t n)
{
    uint8_t *h = f - OUTER, *u = h + 20, *vx = h + 28;
    uint32_t ulen = n + 16, tot = n + OUTER;
    uint16_t sport = (uint16_t)(49152 + (vx_flow_hash(f, n) & 0x3FFF)), c;
    uint64_t acc;
    memset(vx, 0, 8);
    vx[0] = 0x08;                                  /* RFC 7348 §5: I flag */
    vx[4] = vni >> 16; vx[5] = vni >> 8; vx[6] = vni;
    h[0] = 0x45; h[1] = 0; vx_put_be16(h + 2, tot);
    memset(h + 4, 0, 4);                           /* ID 0: the raw socket picks one */
    h[8] = 64; h[9] = 17; h[10] = h[11] = 0;
    memcpy(h + 12, &local_be, 4);
    memcpy(h + 16, &remote_be, 4);
    c = csum_field(vx_csum_add(0, h, 20));
    memcpy(h + 10, &c, 2);
    vx_put_be16(u, sport); vx_put_be16(u + 2, VXLAN_PORT);
    vx_put_be16(u + 4, ulen); u[6] = u[7] = 0;
    /* pseudo-header (addresses, protocol, length) + UDP header + payload, RFC 768 */
    acc = vx_csum_add(0, h + 12, 8) + htons(17) + htons((uint16_t)ulen);
    c = csum_field(vx_csum_add(acc, u, ulen));
    if (!c) c = 0xFFFF;
    memcpy(u + 6, &c, 2);
    return h;
}

/* VIRTIO_NET_HDR_F_NEEDS_CSUM without GSO: finish the checksum the sender's stack left partial
   (vxdp's vnet_csum); 0, or -1 for offsets outside the frame. */
static int finish_csum(const uint8_t *vh, uint8_t *f, uint32_t n)
{
    uint32_t cs = vh[6] | vh[7] << 8, co = vh[8] | vh[9] << 8;
    uint16_t c;
    if (cs >= n || cs + co + 2 > n) return -1;
    c = csum_field(vx_csum_add(0, f + cs, n - cs));
    if (!c) c = 0xFFFF;
    memcpy(f + cs + co, &c, 2);
    return 0;
}

static unsigned tap_burst(int tap, int raw)
{
    struct mmsghdr msgs[BURST];
    struct iovec iov[BURST];
    struct sockaddr_in to = {.sin_family = AF_INET};
    unsigned k = 0, reads = 0, sent = 0;
    to.sin_addr.s_addr = remote_be;
    while (k < BURST) {
        uint8_t *f = slots + (size_t)k * SLOT + HEADROOM, *vh = f - VNET;
        ssize_t r = read(tap, vh, SLOT - HEADROOM + VNET);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        reads++;
        n_tap_rx++;
        if (r < VNET + 14) { n_bad++; continue; }
        uint32_t n = (uint32_t)r - VNET;
        if (vh[1] != 0) {                        /* gso_type: a TSO super-frame */
            n_gso_dropped++;
            continue;
        }
        if ((vh[0] & 1) && finish_csum(vh, f, n) < 0) { n_bad++; continue; }
        iov[k].iov_base = encap(f, n);
        iov[k].iov_len = n + OUTER;
        memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
        msgs[k].msg_hdr.msg_name = &to;
        msgs[k].msg_hdr.msg_namelen = sizeof to;
        msgs[k].msg_hdr.msg_iov = &iov[k];
        msgs[k].msg_hdr.msg_iovlen = 1;
        k++;
    }
    while (sent < k) {
        int rc = sendmmsg(raw, msgs + sent, k - sent, MSG_DONTWAIT);
        if (rc > 0) { sent += rc; n_ul_tx += rc; continue; }
        if (rc < 0 && errno == EINTR) continue;
        n_errors += k - sent;
        break;
    }
    return reads;
}

static void to_tap(int tap, uint8_t *d, uint32_t n)
{
    static const uint8_t zero_vnet[VNET];
    struct iovec w[2];
    if (n < 8 + 14 || !(d[0] & 0x08) || (uint32_t)(d[4] << 16 | d[5] << 8 | d[6]) != vni) {
        n_bad++;
        return;
    }
    w[0].iov_base = (void *)zero_vnet;
    w[0].iov_len = VNET;
    w[1].iov_base = d + 8;
    w[1].iov_len = n - 8;
    if (writev(tap, w, 2) < 0) n_errors++;
    else n_tap_tx++;
}

static unsigned udp_burst(int udp, int tap)
{
    struct mmsghdr msgs[BURST];
    struct iovec iov[BURST];
    int rc, i;
    for (i = 0; i < BURST; i++) {
        iov[i].iov_base = slots + (size_t)i * SLOT + HEADROOM - 8;
        iov[i].iov_len = SLOT - HEADROOM + 8;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_control = cmsgs[i];
        msgs[i].msg_hdr.msg_controllen = CMSG_ROOM;
    }
    do rc = recvmmsg(udp, msgs, BURST, MSG_DONTWAIT, NULL); while (rc < 0 && errno == EINTR);
    for (i = 0; i < rc; i++) {
        uint8_t *d = iov[i].iov_base;
        uint32_t n = msgs[i].msg_len, g = 0, off;
        struct cmsghdr *c;
        for (c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c))
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int v;
                memcpy(&v, CMSG_DATA(c), sizeof v);
                g = (uint32_t)v;
            }
        if (g == 0 || g >= n) g = n;             /* one datagram */
        for (off = 0; off < n; off += g) {
            n_ul_rx++;
            to_tap(tap, d + off, n - off < g ? n - off : g);
        }
    }
    return rc > 0 ? (unsigned)rc : 0;
}

static int open_tap(const char *name)
{
    struct ifreq ifr;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC), sz = VNET;
    unsigned off = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
    if (fd < 0) return -1;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &sz) < 0) {
        close(fd);
        return -1;
    }
    if (ioctl(fd, TUNSETOFFLOAD, off) < 0) perror("vxrelay: TUNSETOFFLOAD (continuing)");
    return fd;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(VXLAN_PORT)};
    struct epoll_event ev, evs[4];
    double busy_ns = 0;
    int tap, udp, raw, ep, big = 8 << 20, one = 1;
    if (argc < 4) {
        fprintf(stderr, "usage: vxrelay TAPNAME LOCAL REMOTE [VNI] [BUSY_POLL_US]\n");
        return 2;
    }
    if (inet_pton(AF_INET, argv[2], &local_be) != 1 || inet_pton(AF_INET, argv[3], &remote_be) != 1) {
        fprintf(stderr, "vxrelay: LOCAL and REMOTE must be IPv4 addresses\n");
        return 2;
    }
    if (argc > 4) vni = (uint32_t)strtoul(argv[4], NULL, 0) & 0xFFFFFF;
    if (argc > 5) busy_ns = atof(argv[5]) * 1e3;
    slots = aligned_alloc(64, (size_t)BURST * SLOT);
    tap = open_tap(argv[1]);
    udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    raw = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
    a.sin_addr.s_addr = local_be;
    if (!slots || tap < 0 || udp < 0 || raw < 0 || bind(udp, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("vxrelay: set-up");
        return 1;
    }
    /* vxdp's underlay settings (dataplane/underlay.py): big buffers, UDP_GRO, IP_RECVTOS */
    setsockopt(udp, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    setsockopt(raw, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    setsockopt(udp, SOL_UDP, UDP_GRO, &one, sizeof one);
    setsockopt(udp, IPPROTO_IP, IP_RECVTOS, &one, sizeof one);
    ep = epoll_create1(EPOLL_CLOEXEC);
    ev.events = EPOLLIN; ev.data.fd = tap;
    epoll_ctl(ep, EPOLL_CTL_ADD, tap, &ev);
    ev.events = EPOLLIN; ev.data.fd = udp;
    epoll_ctl(ep, EPOLL_CTL_ADD, udp, &ev);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        int n = epoll_wait(ep, evs, 4, 1000), i;
        for (i = 0; i < n; i++) {
            if (evs[i].data.fd == tap) tap_burst(tap, raw);
            else udp_burst(udp, tap);
        }
        if (n > 0 && busy_ns > 0) {              /* vxdp's poll_all(): adaptive, bounded */
            double t0 = vx_now_ns(), last = t0, t;
            while (!stop) {
                unsigned got = tap_burst(tap, raw) + udp_burst(udp, tap);
                t = vx_now_ns();
                if (got) last = t;
                else if (t - last >= busy_ns) break;
                else sched_yield();
                if (t - t0 >= POLL_LIMIT_NS) break;
            }
        }
    }
    fprintf(stderr, "vxrelay: tap_rx %llu tap_tx %llu ul_rx %llu ul_tx %llu gso_dropped %llu "
            "bad %llu errors %llu\n", (unsigned long long)n_tap_rx, (unsigned long long)n_tap_tx,
            (unsigned long long)n_ul_rx, (unsigned long long)n_ul_tx,
            (unsigned long long)n_gso_dropped, (unsigned long long)n_bad,
            (unsigned long long)n_errors);
    return 0;
}
