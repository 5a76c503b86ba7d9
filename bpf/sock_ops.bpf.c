// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * cgroup/sock_ops at the cgroup v2 root, for sockets connect4/6 redirected (they carry a
 * skein_sk_orig record):
 *
 * - TCP_CONNECT_CB (the SYN is about to leave): count the socket in its pod's share and ask
 *   for state callbacks, so its close is seen.
 * - ACTIVE_ESTABLISHED_CB: file the original destination under (netns cookie, client local
 *   port) — the pair the agent can see on the socket it accepts. It runs while the SYN-ACK is
 *   processed, before the final ACK leaves, so the record exists before the agent can accept.
 * - STATE_CB to TCP_CLOSE: uncount the socket and delete its record if the agent never read
 *   it. Records and counts thus live exactly as long as the pod's sockets (skein.h explains
 *   why this bounds each pod's share of skein_orig_peer).
 */
#include "skein.h"

static __always_inline struct sk_orig *sk_orig_of(struct bpf_sock_ops *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&skein_sk_orig, sk, 0, 0);
}

static __always_inline void share_add(__u64 netns)
{
	__u64 *held = bpf_map_lookup_elem(&skein_pod_share, &netns);

	if (!held) {
		__u64 zero = 0;
		bpf_map_update_elem(&skein_pod_share, &netns, &zero, BPF_NOEXIST);
		held = bpf_map_lookup_elem(&skein_pod_share, &netns);
		if (!held)
			return;
	}
	__sync_fetch_and_add(held, 1);
}

static __always_inline void share_sub(__u64 netns)
{
	__u64 *held = bpf_map_lookup_elem(&skein_pod_share, &netns);

	/* Gone (the pod released, or its entry aged out): nothing to give back. */
	if (held && *held > 0)
		__sync_fetch_and_add(held, -1);
}

SEC("sockops")
int skein_sock_ops(struct bpf_sock_ops *ctx)
{
	__u32 op = ctx->op;

	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && op != BPF_SOCK_OPS_STATE_CB)
		return 1;
	struct sk_orig *so = sk_orig_of(ctx);
	if (!so)
		return 1;

	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		if (!(so->flags & SK_ORIG_COUNTED)) {
			share_add(so->filed.netns_cookie);
			so->flags |= SK_ORIG_COUNTED;
		}
		bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}

	if (op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		struct peer_key key = {
			.netns_cookie = so->filed.netns_cookie,
			.port = (__u16)ctx->local_port,
			.family = AF_INET,
		};
		if (ctx->family == AF_INET6 &&
		    !(ctx->remote_ip6[0] == 0 && ctx->remote_ip6[1] == 0 && ctx->remote_ip6[2] == bpf_htonl(0xffff)))
			key.family = AF_INET6;
		struct orig_dst copy = so->dst;
		if (bpf_map_update_elem(&skein_orig_peer, &key, &copy, BPF_ANY) == 0) {
			so->filed = key;
			so->flags |= SK_ORIG_FILED;
		}
		return 1;
	}

	/* STATE_CB: args[1] is the new state. */
	if (ctx->args[1] != BPF_TCP_CLOSE)
		return 1;
	if (so->flags & SK_ORIG_FILED) {
		struct peer_key key = so->filed;
		bpf_map_delete_elem(&skein_orig_peer, &key); /* ENOENT when the agent read it: fine */
	}
	if (so->flags & SK_ORIG_COUNTED)
		share_sub(so->filed.netns_cookie);
	so->flags = 0;
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
