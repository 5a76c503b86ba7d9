// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sk_lookup, attached in each enrolled pod's netns: inbound TCP to one of the pod's addresses
 * goes to the agent's inbound plaintext listener (15006) of that pod, which reads the
 * original destination with getsockname(). Not steered: the tunnel port (the agent's 15008
 * listener is found by the normal lookup), ports excluded for the pod, and anything arriving
 * on loopback or sent from the pod's own address — that is the pod talking to itself, or
 * the agent delivering inbound traffic to the app from inside the netns.
 *
 * While the agent is down (its 15006 socket gone from the SOCKMAP), or when the kernel
 * refuses to assign that socket, inbound connections to steered ports are refused (and
 * counted in skein_counters): a STRICT pod must not take plaintext behind the proxy's back.
 *
 * The pod is found by destination address (pod IPs are unique on a node), because
 * sk_lookup programs cannot read the netns cookie on older kernels.
 */
#include "skein.h"

SEC("sk_lookup")
int skein_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return SK_PASS;

	struct pod_addr addr = { .family = ctx->family };
	if (ctx->family == AF_INET) {
		addr.addr[0] = ctx->local_ip4;
	} else if (ctx->family == AF_INET6) {
		addr.addr[0] = ctx->local_ip6[0];
		addr.addr[1] = ctx->local_ip6[1];
		addr.addr[2] = ctx->local_ip6[2];
		addr.addr[3] = ctx->local_ip6[3];
	} else {
		return SK_PASS;
	}
	struct inbound_pod *pod = bpf_map_lookup_elem(&skein_in_addrs, &addr);
	if (!pod)
		return SK_PASS;

	__u16 port = (__u16)ctx->local_port;
	__u32 slot = pod->slot;
	if (port == pod->tunnel_port)
		return SK_PASS;
	struct slot_port excluded = { .slot = slot, .port = port };
	if (bpf_map_lookup_elem(&skein_in_excl, &excluded))
		return SK_PASS;

	/*
	 * The pod talking to its own address (or the agent, from inside the pod, delivering to
	 * the app on the pod IP): the source is one of the pod's addresses. Such packets are not
	 * seen on loopback here, because the route's input interface is the device that holds
	 * the address. An outside peer cannot complete a handshake with a spoofed pod source:
	 * the SYN-ACK would stay inside the pod.
	 */
	struct pod_addr peer = { .family = ctx->family };
	if (ctx->family == AF_INET) {
		peer.addr[0] = ctx->remote_ip4;
	} else {
		peer.addr[0] = ctx->remote_ip6[0];
		peer.addr[1] = ctx->remote_ip6[1];
		peer.addr[2] = ctx->remote_ip6[2];
		peer.addr[3] = ctx->remote_ip6[3];
	}
	struct inbound_pod *from = bpf_map_lookup_elem(&skein_in_addrs, &peer);
	if (from && from->slot == slot)
		return SK_PASS;

	struct bpf_sock *sk = bpf_map_lookup_elem(&skein_in_socks, &slot);
	if (!sk) {
		/* agent down: refuse (RST) rather than let plaintext bypass policy */
		skein_count(SKEIN_CTR_SK_LOOKUP_NO_SOCKET);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		/*
		 * The kernel refused the agent's socket for this packet (e.g. an IPv4-only listener
		 * for an IPv6 connection, a socket no longer listening). SK_PASS would hand the
		 * connection to whatever the app listens on, in plaintext: fail closed instead.
		 */
		skein_count(SKEIN_CTR_SK_ASSIGN_FAILED);
		return SK_DROP;
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
