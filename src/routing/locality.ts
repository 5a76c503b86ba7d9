/**
 * Locality-aware candidate tiers (the spirit of Kubernetes' trafficDistribution: PreferClose):
 * endpoints on the caller's node, then in the caller's zone, then the rest. Only the closest
 * tier with a usable endpoint is offered to the load balancer; the next tier takes over when a
 * closer one is empty, fully ejected, or fully tried by this request.
 */
import type { Endpoint, NodeInfo } from '../config/model.js';

/** Endpoints split by distance from a node: [same node, same zone, others]. */
export type LocalityTiers = readonly [readonly Endpoint[], readonly Endpoint[], readonly Endpoint[]];

/** Node name -> zone, from the snapshot's nodes. */
export function zonesOf(nodes: readonly NodeInfo[]): Map<string, string> {
  const zones = new Map<string, string>();
  for (const n of nodes) if (n.zone) zones.set(n.name, n.zone);
  return zones;
}

export function localityTiers(candidates: readonly Endpoint[], localNode: string, zones: ReadonlyMap<string, string>): LocalityTiers {
  const zone = zones.get(localNode);
  const node: Endpoint[] = [];
  const sameZone: Endpoint[] = [];
  const rest: Endpoint[] = [];
  for (const ep of candidates) {
    if (ep.node !== undefined && ep.node === localNode) node.push(ep);
    else if (zone !== undefined && ep.node !== undefined && zones.get(ep.node) === zone) sameZone.push(ep);
    else rest.push(ep);
  }
  return [node, sameZone, rest];
}

/**
 * The closest tier that has an endpoint `usable` accepts, filtered to those; the tier itself
 * (no copy) when all of it is usable. Empty when no tier has one.
 */
export function closestUsable(tiers: LocalityTiers, usable?: (ep: Endpoint) => boolean): readonly Endpoint[] {
  for (const tier of tiers) {
    if (tier.length === 0) continue;
    if (!usable) return tier;
    let all = true;
    for (const ep of tier) {
      if (!usable(ep)) {
        all = false;
        break;
      }
    }
    if (all) return tier;
    const some = tier.filter(usable);
    if (some.length > 0) return some;
  }
  return [];
}
