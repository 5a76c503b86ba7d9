/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * skein's BPF maps and their key/value types, declared once for every program.
 *
 * Every map is pinned by name (LIBBPF_PIN_BY_NAME) under <pin root>/maps/, so all programs
 * share one instance and an agent restart reuses the maps (and their content) instead of
 * making new ones. Changing any type below changes the pin layout: bump SKEIN_PIN_LAYOUT so
 * an agent meets old pins with a clear "stale pins" error rather than misreading them.
 * The TypeScript encoders live in src/capture/maps.ts and must match byte for byte
 * (little-endian host, fields in declaration order, explicit padding).
 */
#ifndef SKEIN_BPF_H
#define SKEIN_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SKEIN_PIN_LAYOUT 2

/* Not in vmlinux.h (they are macros in the kernel). */
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define LOOPBACK_IFINDEX 1

#define SKEIN_MAX_PODS 4096
#define SKEIN_MAX_EXCLUDED_PORTS 65536
#define SKEIN_MAX_INFLIGHT 65536

/* skein_stamp[0]: what wrote these pins. layout = SKEIN_PIN_LAYOUT of the writer. */
struct skein_stamp {
	__u32 layout;
	__u32 reserved;
};

/* skein_config[0]: agent-wide settings written by the agent at start. */
struct skein_config {
	__u32 agent_mark; /* SO_MARK on the agent's own sockets; connect4/6 leave them alone (0 = none) */
	__u32 pod_share;  /* redirected sockets one pod may hold at once (see skein_pod_share; 0 = no cap) */
};

/* skein_enrolled value, keyed by the pod's netns cookie (__u64). */
struct enrolled_netns {
	__u16 outbound_port; /* where connect4/6 send the pod's connections: 127.0.0.1 / [::1] : this; 0 = refuse them */
	__u16 reserved16;
	__u32 reserved32;
};

/* skein_out_excl key: an outbound destination port left alone for one netns. Value: __u8 1. */
struct netns_port {
	__u64 netns_cookie;
	__u16 port; /* host byte order */
	__u16 reserved16;
	__u32 reserved32;
};

/* The destination a pod asked for before connect4/6 rewrote it. */
struct orig_dst {
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 port;   /* network byte order */
	__u32 addr[4]; /* network byte order; IPv4 in addr[0] */
};

/*
 * skein_orig_peer key: a redirected connection as the agent's listener sees it, i.e. the
 * pod's netns and the client's local port (the accepted socket's remote port).
 */
struct peer_key {
	__u64 netns_cookie;
	__u16 port;   /* host byte order */
	__u16 family; /* family on the wire: AF_INET (also for v4-mapped IPv6 sockets) or AF_INET6 */
	__u32 reserved;
};

/* skein_in_addrs key: an address of an enrolled pod (inbound steering). */
struct pod_addr {
	__u32 family; /* AF_INET or AF_INET6 */
	__u32 addr[4]; /* network byte order; IPv4 in addr[0], rest zero */
};

/* skein_in_addrs value. */
struct inbound_pod {
	__u32 slot;        /* the pod's index in skein_in_socks / skein_pods */
	__u16 tunnel_port; /* never steered (the agent's 15008 listener takes it by normal lookup) */
	__u16 reserved;
};

/* skein_in_excl key: an inbound port of one pod that is never steered. Value: __u8 1. */
struct slot_port {
	__u32 slot;
	__u16 port; /* host byte order */
	__u16 reserved;
};

/* skein_pods value, keyed by slot (__u32): who owns a slot, so a restarted agent can adopt or clean it. */
struct pod_record {
	__u64 netns_cookie;
	__u64 netns_ino;  /* inode of the netns, as `bpftool link` and link info show it */
	char uid[128];    /* the Workload uid, NUL-terminated */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skein_stamp);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_stamp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct skein_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_config SEC(".maps");

/* netns cookie (__u64) -> struct enrolled_netns: the pods whose outbound is captured. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_PODS);
	__type(key, __u64);
	__type(value, struct enrolled_netns);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_enrolled SEC(".maps");

/* struct netns_port -> __u8: outbound ports excluded per pod. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_EXCLUDED_PORTS);
	__type(key, struct netns_port);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_out_excl SEC(".maps");

/*
 * Fairness of the original-destination records (one pod must not evict another's).
 *
 * The destination a socket asked for lives first in the socket itself (skein_sk_orig,
 * socket-local storage: freed with the socket, shared with no one, never evicted), and only
 * from establishment until the agent reads it in the node-wide skein_orig_peer map. Each pod
 * may hold at most skein_config.pod_share redirected sockets at once (connecting or open):
 * skein_pod_share counts them per netns, up at TCP connect (sock_ops TCP_CONNECT_CB), down
 * when the socket reaches TCP_CLOSE (sock_ops STATE_CB, which also deletes its record from
 * skein_orig_peer if the agent never read it, e.g. a connection closed over a listener's
 * cap). A pod's records in skein_orig_peer are thus at most its live sockets, at most
 * pod_share; connect4/6 refuse a connect over it (EPERM to the app, counted
 * SKEIN_CTR_POD_SHARE_REFUSED). With pod_share well below the map's size no single pod can
 * fill skein_orig_peer, so its LRU never has to evict another pod's record.
 * (A burst of connects on several CPUs may pass the check before the count goes up: the
 * overshoot is bounded by the connects in flight at that instant.)
 */

/* skein_sk_orig value: what connect4/6 recorded on a redirected socket. */
struct sk_orig {
	struct orig_dst dst;
	__u32 flags;          /* SK_ORIG_COUNTED, SK_ORIG_FILED */
	struct peer_key filed; /* the skein_orig_peer key, once filed; netns_cookie also says whose share */
};
#define SK_ORIG_COUNTED 1 /* counted in skein_pod_share[filed.netns_cookie] */
#define SK_ORIG_FILED 2   /* a record under `filed` was written to skein_orig_peer */

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_sk_orig SEC(".maps");

/*
 * netns cookie (__u64) -> __u64 redirected sockets the pod holds now. LRU so cookies of gone
 * pods age out (the agent also deletes a pod's entry at release); a live pod's entry evicted
 * would only reset its count, never charge another pod.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKEIN_MAX_PODS * 4);
	__type(key, __u64);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_pod_share SEC(".maps");

/*
 * struct peer_key -> struct orig_dst: filed by sock_ops at establishment, read (and deleted)
 * by the agent for each accepted connection, deleted by sock_ops at close if still there.
 * LRU only as a last resort: the per-pod share keeps it from filling.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SKEIN_MAX_INFLIGHT);
	__type(key, struct peer_key);
	__type(value, struct orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_orig_peer SEC(".maps");

/* struct pod_addr -> struct inbound_pod: addresses whose inbound TCP sk_lookup steers. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_PODS * 4);
	__type(key, struct pod_addr);
	__type(value, struct inbound_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_in_addrs SEC(".maps");

/* struct slot_port -> __u8: inbound ports excluded per pod. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_EXCLUDED_PORTS);
	__type(key, struct slot_port);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_in_excl SEC(".maps");

/* slot (__u32) -> the agent's inbound plaintext (15006) listening socket in that pod's netns. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, SKEIN_MAX_PODS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_in_socks SEC(".maps");

/* slot (__u32) -> struct pod_record: slot ownership, for adoption after a restart. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SKEIN_MAX_PODS);
	__type(key, __u32);
	__type(value, struct pod_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_pods SEC(".maps");

/*
 * skein_counters index: events the programs count where only the kernel sees them. The
 * agent sums the per-CPU slots and reports them (admin /stats, skein_capture_* metrics).
 */
enum skein_counter {
	SKEIN_CTR_SK_ASSIGN_FAILED = 0, /* sk_lookup: bpf_sk_assign refused the agent's 15006 socket; dropped */
	SKEIN_CTR_SK_LOOKUP_NO_SOCKET = 1, /* sk_lookup: no 15006 socket in the SOCKMAP (agent down); dropped */
	SKEIN_CTR_POD_SHARE_REFUSED = 2, /* connect4/6: the pod holds its share of redirected sockets; connect refused */
	SKEIN_CTR_NO_RECORD = 3, /* connect4/6: no socket storage for the record; connect refused (never passed uncaptured) */
	SKEIN_CTR_MAX = 8, /* room for more counters without a new pin layout */
};

/* counter index (__u32, enum skein_counter) -> __u64 events, one slot per CPU (no atomics). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SKEIN_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} skein_counters SEC(".maps");

static __always_inline void skein_count(__u32 counter)
{
	__u64 *n = bpf_map_lookup_elem(&skein_counters, &counter);

	if (n)
		*n += 1;
}

/* The agent's own sockets carry its mark; they are never redirected (no loop). */
static __always_inline int skein_is_agent_socket(struct bpf_sock *sk)
{
	__u32 zero = 0;
	struct skein_config *cfg = bpf_map_lookup_elem(&skein_config, &zero);

	return sk && cfg && cfg->agent_mark != 0 && sk->mark == cfg->agent_mark;
}

static __always_inline __u32 skein_pod_share_limit(void)
{
	__u32 zero = 0;
	struct skein_config *cfg = bpf_map_lookup_elem(&skein_config, &zero);

	return cfg ? cfg->pod_share : 0;
}

/* connect4/6: record where a redirected socket wanted to go, within the pod's share. Returns 0
 * when the connect must be refused (over the share, or no storage: never pass it uncaptured). */
static __always_inline int skein_record_orig(struct bpf_sock_addr *ctx, __u64 netns, struct orig_dst *orig)
{
	__u32 share = skein_pod_share_limit();
	__u64 *held = bpf_map_lookup_elem(&skein_pod_share, &netns);

	if (share != 0 && held && *held >= share) {
		skein_count(SKEIN_CTR_POD_SHARE_REFUSED);
		return 0;
	}
	struct bpf_sock *sk = ctx->sk;
	if (!sk) {
		skein_count(SKEIN_CTR_NO_RECORD);
		return 0;
	}
	struct sk_orig *so = bpf_sk_storage_get(&skein_sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!so) {
		skein_count(SKEIN_CTR_NO_RECORD);
		return 0;
	}
	/* A socket connect()ed again (after a failed attempt) keeps its count; only the destination changes. */
	so->dst = *orig;
	so->filed.netns_cookie = netns;
	return 1;
}

static __always_inline int skein_port_excluded(__u64 netns_cookie, __u16 port)
{
	struct netns_port key = { .netns_cookie = netns_cookie, .port = port };

	return bpf_map_lookup_elem(&skein_out_excl, &key) != NULL;
}

#endif /* SKEIN_BPF_H */
