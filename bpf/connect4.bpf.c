// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/connect4, attached once at the cgroup v2 root: an enrolled pod's TCP connect()
 * goes to the agent's outbound listener in the pod's own netns (127.0.0.1:<outbound_port>),
 * and the destination it asked for is kept in the socket's own storage until sock_ops files
 * it under the client's local port (see sock_ops.bpf.c), within the pod's share (skein.h).
 */
#include "skein.h"

SEC("cgroup/connect4")
int skein_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
		return 1; /* UDP and raw sockets are not captured (yet) */

	__u64 netns = bpf_get_netns_cookie(ctx);
	struct enrolled_netns *pod = bpf_map_lookup_elem(&skein_enrolled, &netns);
	if (!pod)
		return 1;

	__u32 dst = ctx->user_ip4;
	__u32 dst_host = bpf_ntohl(dst);
	if ((dst_host >> 24) == 127 || dst_host == 0)
		return 1; /* the pod's own loopback (0.0.0.0 also means "this host") */
	if (skein_is_agent_socket(ctx->sk))
		return 1;
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (skein_port_excluded(netns, port))
		return 1;
	if (pod->outbound_port == 0)
		return 0; /* held refusing (a port the agent needs is the app's): connect() fails, EPERM */

	struct orig_dst orig = { .family = AF_INET, .port = (__u16)ctx->user_port };
	orig.addr[0] = dst;
	if (!skein_record_orig(ctx, netns, &orig))
		return 0; /* refused (EPERM): over the pod's share, or no record the agent could route by */

	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(pod->outbound_port);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
