// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/sock_ops at the cgroup v2 root: when a redirected connection is established on the
 * client side, file its original destination under (netns cookie, client local port) — the
 * pair the agent can see on the socket it accepts. ACTIVE_ESTABLISHED_CB runs while the
 * SYN-ACK is processed, before the final ACK leaves, so the record exists before the agent
 * can accept the connection.
 */
#include "skein.h"

SEC("sockops")
int skein_sock_ops(struct bpf_sock_ops *ctx)
{
	if (ctx->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;

	__u64 sock = bpf_get_socket_cookie(ctx);
	struct orig_dst *orig = bpf_map_lookup_elem(&skein_orig_sk, &sock);
	if (!orig)
		return 1;

	struct peer_key key = {
		.netns_cookie = bpf_get_netns_cookie(ctx),
		.port = (__u16)ctx->local_port,
		.family = AF_INET,
	};
	if (ctx->family == AF_INET6 &&
	    !(ctx->remote_ip6[0] == 0 && ctx->remote_ip6[1] == 0 && ctx->remote_ip6[2] == bpf_htonl(0xffff)))
		key.family = AF_INET6;

	struct orig_dst copy = *orig;
	bpf_map_update_elem(&skein_orig_peer, &key, &copy, BPF_ANY);
	bpf_map_delete_elem(&skein_orig_sk, &sock);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
