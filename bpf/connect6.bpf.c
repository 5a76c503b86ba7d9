// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect6: the IPv6 twin of connect4. An IPv4-mapped destination on an IPv6 socket
 * (::ffff:a.b.c.d) never reaches connect4, so it is handled here and redirected to
 * ::ffff:127.0.0.1; anything else goes to [::1]:<outbound_port>.
 */
#include "skein.h"

SEC("cgroup/connect6")
int skein_connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1;

	__u64 netns = bpf_get_netns_cookie(ctx);
	struct enrolled_netns *pod = bpf_map_lookup_elem(&skein_enrolled, &netns);
	if (!pod)
		return 1;

	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	int mapped = a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff);
	if (a0 == 0 && a1 == 0 && a2 == 0 && (a3 == 0 || a3 == bpf_htonl(1)))
		return 1; /* ::1 and :: */
	if (mapped && ((bpf_ntohl(a3) >> 24) == 127 || a3 == 0))
		return 1; /* ::ffff:127.x.y.z */
	if (skein_is_agent_socket(ctx->sk))
		return 1;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (skein_port_excluded(netns, port))
		return 1;
	if (pod->outbound_port == 0)
		return 0; /* held refusing (a port the agent needs is the app's): connect() fails, EPERM */

	struct orig_dst orig = { .port = (__u16)ctx->user_port };
	if (mapped) {
		orig.family = AF_INET;
		orig.addr[0] = a3;
	} else {
		orig.family = AF_INET6;
		orig.addr[0] = a0;
		orig.addr[1] = a1;
		orig.addr[2] = a2;
		orig.addr[3] = a3;
	}
	if (!skein_record_orig(ctx, netns, &orig))
		return 0; /* refused (EPERM): over the pod's share, or no record */

	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0xffff) : 0;
	ctx->user_ip6[3] = mapped ? bpf_htonl(0x7f000001) : bpf_htonl(1);
	ctx->user_port = bpf_htons(pod->outbound_port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
