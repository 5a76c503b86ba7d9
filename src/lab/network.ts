/**
 * The lab's network, made of real kernel objects:
 *
 *   underlay netns ── br0 (172.20.0.1) ── veth ── node netns (eth0 172.20.0.1x, routes to the
 *   other nodes' pod CIDRs, Service DNAT in nftables) ── veth per pod ── pod netns (eth0 with
 *   the pod IP /32, default route via 169.254.1.1).
 *
 * Pods are routed, not bridged (Calico's scheme): every packet between pods crosses a node
 * netns at L3, so conntrack sees both directions of Service DNAT, even between pods of one node.
 * The bridge lives in its own netns, so two labs never share an interface or an address.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseCidr } from './ipam.js';
import type { LabPlan, PlannedNode, PlannedPod } from './plan.js';
import { HOST_VETH_MAC, POD_GATEWAY } from './plan.js';
import { renderNodeHosts, renderPodHosts, renderServiceRules } from './render.js';
import { inNetns, ipBatch, run } from './sys.js';

/** `ip netns exec` bind-mounts /etc/netns/<netns>/hosts over /etc/hosts. */
export const ETC_NETNS = '/etc/netns';

export async function createUnderlay(plan: LabPlan): Promise<void> {
  const bits = parseCidr(plan.underlayCIDR)!.bits;
  await run('ip', ['netns', 'add', plan.underlayNetns]);
  await ipBatch(plan.underlayNetns, [
    'link set lo up',
    `link add ${plan.underlayBridge} type bridge`,
    `addr add ${plan.underlayGateway}/${bits} dev ${plan.underlayBridge}`,
    `link set ${plan.underlayBridge} up`,
  ]);
}

export async function createNode(plan: LabPlan, node: PlannedNode): Promise<void> {
  const bits = parseCidr(plan.underlayCIDR)!.bits;
  await run('ip', ['netns', 'add', node.netns]);
  await run('ip', ['-n', plan.underlayNetns, 'link', 'add', node.underlayIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', node.netns]);
  await ipBatch(plan.underlayNetns, [`link set ${node.underlayIf} master ${plan.underlayBridge}`, `link set ${node.underlayIf} up`]);
  await ipBatch(node.netns, [
    'link set lo up',
    `addr add ${node.address}/${bits} dev eth0`,
    'link set eth0 up',
    ...plan.nodes.filter((n) => n !== node).map((n) => `route add ${n.podCIDR} via ${n.address} dev eth0`),
  ]);
  // A node forwards between its pods and the underlay.
  await inNetns(node.netns, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  writeHosts(node.netns, renderNodeHosts(plan));
  await applyServiceRules(plan, node);
}

export async function createPod(plan: LabPlan, pod: PlannedPod): Promise<void> {
  const node = plan.nodes.find((n) => n.name === pod.node)!;
  await run('ip', ['netns', 'add', pod.netns]);
  await run('ip', ['-n', node.netns, 'link', 'add', pod.hostIf, 'address', HOST_VETH_MAC, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns]);
  await ipBatch(node.netns, [`link set ${pod.hostIf} up`, `route add ${pod.ip}/32 dev ${pod.hostIf}`]);
  await ipBatch(pod.netns, [
    'link set lo up',
    `addr add ${pod.ip}/32 dev eth0`,
    'link set eth0 up',
    `route add ${POD_GATEWAY} dev eth0 scope link`,
    `route add default via ${POD_GATEWAY} dev eth0`,
    `neigh replace ${POD_GATEWAY} lladdr ${HOST_VETH_MAC} dev eth0 nud permanent`,
  ]);
  writeHosts(pod.netns, renderPodHosts(plan, pod));
}

/** Replaces the node's Service table in one nft transaction. */
export async function applyServiceRules(plan: LabPlan, node: PlannedNode): Promise<void> {
  await inNetns(node.netns, 'nft', ['-f', '-'], { input: renderServiceRules(plan) });
}

export function writeHosts(netns: string, text: string): void {
  const dir = join(ETC_NETNS, netns);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'hosts'), text);
}

/** Deletes a netns (its interfaces, routes and nft tables go with it) and its /etc/netns folder. */
export async function deleteNetns(netns: string): Promise<void> {
  await run('ip', ['netns', 'delete', netns], { allowFailure: true });
  rmSync(join(ETC_NETNS, netns), { recursive: true, force: true });
}
