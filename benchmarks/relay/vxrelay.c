/* vxrelay: the floor of a userspace VTEP on this machine, for bench_e2e.
 *
 * One TAP, one UDP socket, one remote, a fixed VXLAN header: no tables, no learning, no ARP
 * proxy, no Python. It makes the same system calls per burst as vxdp's fast path and opens its
 * TAP and sockets with the same settings, so the latency it adds per crossing is what any
 * userspace VTEP pays for the wake-ups and copies alone:
 *
 *   TAP readable:  read() until EAGAIN or BURST frames (IFF_VNET_HDR, TUNSETOFFLOAD
 *                  csum|tso4|tso6 as vxdp asks), outer IPv4 + UDP headers with both checksums
 *                  into the headroom, one sendmmsg() on an IPPROTO_RAW socket;
 *   UDP readable:  recvmmsg() of BURST datagrams on the socket bound to LOCAL:4789, each
 *                  written to the TAP behind a zero virtio_net_hdr with writev().
 *
 * A GSO super-frame from the TAP is dropped (counted): this relay measures round trips of
 * small frames, not throughput. The TAP is created here and left in this namespace; the
 * caller moves it into the container's namespace and configures it (the fd stays valid), as
 * vxdp does.
 *
 *   vxrelay TAPNAME LOCAL REMOTE [VNI] [BUSY_POLL_US]
 *
 * Prints "ready" on stdout once the TAP exists and the sockets are bound; runs until SIGTERM
 * or SIGINT, then prints its counters on stderr and exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
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

#define BURST 64
#define VNET 12                      /* virtio_net_hdr_mrg_rxbuf, as vxdp's TAPs */
#define HEADROOM 64
#define SLOT (HEADROOM + 65536 + 64)
#define OUTER 36                     /* IPv4 20 + UDP 8 + VXLAN 8 */
#define VXLAN_PORT 4789

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static uint8_t *slots;               /* BURST rx slots: TAP frames and UDP datagrams */
static uint32_t local_be, remote_be, vni = 4097;
static uint64_t n_tap_rx, n_tap_tx, n_ul_rx, n_ul_tx, n_gso_dropped, n_errors;

static uint32_t sum16(const uint8_t *p, size_t n, uint32_t acc)
{
    for (; n > 1; p += 2, n -= 2) acc += (uint32_t)p[0] << 8 | p[1];
    if (n) acc += (uint32_t)p[0] << 8;
    return acc;
}

static uint16_t fold(uint32_t acc)
{
    while (acc >> 16) acc = (acc & 0xFFFF) + (acc >> 16);
    return (uint16_t)acc;
}

/* IPv4 + UDP + VXLAN in front of the `n`-byte frame at `f` (the raw socket's datagram). */
static uint8_t *encap(uint8_t *f, uint32_t n, uint16_t sport)
{
    uint8_t *h = f - OUTER, *u = h + 20, *vx = h + 28;
    uint32_t ulen = n + 16, tot = n + OUTER, acc;
    uint16_t c;
    memset(vx, 0, 8);
    vx[0] = 0x08;
    vx[4] = vni >> 16; vx[5] = vni >> 8; vx[6] = vni;
    h[0] = 0x45; h[1] = 0; h[2] = tot >> 8; h[3] = tot;
    memset(h + 4, 0, 4);
    h[8] = 64; h[9] = 17; h[10] = h[11] = 0;
    memcpy(h + 12, &local_be, 4);
    memcpy(h + 16, &remote_be, 4);
    c = ~fold(sum16(h, 20, 0));
    h[10] = c >> 8; h[11] = c;
    u[0] = sport >> 8; u[1] = sport; u[2] = VXLAN_PORT >> 8; u[3] = VXLAN_PORT & 0xFF;
    u[4] = ulen >> 8; u[5] = ulen; u[6] = u[7] = 0;
    acc = sum16(h + 12, 8, 17 + ulen);
    c = ~fold(sum16(u, ulen, acc));
    if (!c) c = 0xFFFF;
    u[6] = c >> 8; u[7] = c;
    return h;
}

static void tap_burst(int tap, int raw)
{
    struct mmsghdr msgs[BURST];
    struct iovec iov[BURST];
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = 0};
    unsigned k = 0, sent = 0;
    to.sin_addr.s_addr = remote_be;
    while (k < BURST) {
        uint8_t *f = slots + (size_t)k * SLOT + HEADROOM;
        ssize_t r = read(tap, f - VNET, SLOT - HEADROOM + VNET);
        if (r <= VNET) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        n_tap_rx++;
        if (f[-VNET + 1] != 0) {                 /* gso_type: a TSO super-frame */
            n_gso_dropped++;
            continue;
        }
        uint32_t n = (uint32_t)r - VNET;
        uint16_t sport = 49152 + (uint16_t)(n_tap_rx & 0x3FFF);
        iov[k].iov_base = encap(f, n, sport);
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
}

static void udp_burst(int udp, int tap)
{
    static const uint8_t zero_vnet[VNET];
    struct mmsghdr msgs[BURST];
    struct iovec iov[BURST];
    int rc, i;
    for (i = 0; i < BURST; i++) {
        iov[i].iov_base = slots + (size_t)i * SLOT + HEADROOM - 8;
        iov[i].iov_len = SLOT - HEADROOM + 8;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    do rc = recvmmsg(udp, msgs, BURST, MSG_DONTWAIT, NULL); while (rc < 0 && errno == EINTR);
    for (i = 0; i < rc; i++) {
        struct iovec w[2];
        n_ul_rx++;
        if (msgs[i].msg_len < 8 + 14) continue;
        w[0].iov_base = (void *)zero_vnet;
        w[0].iov_len = VNET;
        w[1].iov_base = (uint8_t *)iov[i].iov_base + 8;
        w[1].iov_len = msgs[i].msg_len - 8;
        if (writev(tap, w, 2) < 0) n_errors++;
        else n_tap_tx++;
    }
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(VXLAN_PORT)};
    struct epoll_event ev, evs[4];
    double busy = 0;
    int tap, udp, raw, ep, big = 8 << 20;
    if (argc < 4) {
        fprintf(stderr, "usage: vxrelay TAPNAME LOCAL REMOTE [VNI] [BUSY_POLL_US]\n");
        return 2;
    }
    if (inet_pton(AF_INET, argv[2], &local_be) != 1 || inet_pton(AF_INET, argv[3], &remote_be) != 1) {
        fprintf(stderr, "vxrelay: LOCAL and REMOTE must be IPv4 addresses\n");
        return 2;
    }
    if (argc > 4) vni = (uint32_t)strtoul(argv[4], NULL, 0) & 0xFFFFFF;
    if (argc > 5) busy = atof(argv[5]) * 1e-6;
    slots = aligned_alloc(64, (size_t)BURST * SLOT);
    tap = open_tap(argv[1]);
    udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    raw = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_RAW);
    a.sin_addr.s_addr = local_be;
    if (!slots || tap < 0 || udp < 0 || raw < 0 || bind(udp, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("vxrelay: set-up");
        return 1;
    }
    setsockopt(udp, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    setsockopt(raw, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
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
        if (n > 0 && busy > 0) {                 /* vxdp's busy_poll: keep polling a while */
            double until = now_s() + busy;
            while (now_s() < until && !stop) {
                tap_burst(tap, raw);
                udp_burst(udp, tap);
            }
        }
    }
    fprintf(stderr, "vxrelay: tap_rx %llu tap_tx %llu ul_rx %llu ul_tx %llu gso_dropped %llu "
            "errors %llu\n", (unsigned long long)n_tap_rx, (unsigned long long)n_tap_tx,
            (unsigned long long)n_ul_rx, (unsigned long long)n_ul_tx,
            (unsigned long long)n_gso_dropped, (unsigned long long)n_errors);
    return 0;
}
