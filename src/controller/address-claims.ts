/** Addresses several objects may claim (a pod its IP, a Service its VIP:port): the oldest keeps it. */

/** Who claims an address. */
export interface Claim {
  key: string;
  createdAt: string;
  name: string;
}

function older(a: Claim, b: Claim): boolean {
  return a.createdAt < b.createdAt || (a.createdAt === b.createdAt && a.key < b.key);
}

/** address -> claims, with the winner computed on demand. */
export class Claims {
  private readonly byAddr = new Map<string, Claim[]>();

  add(addr: string, c: Claim): void {
    const list = this.byAddr.get(addr);
    if (list) list.push(c);
    else this.byAddr.set(addr, [c]);
  }

  remove(addr: string, key: string): void {
    const list = this.byAddr.get(addr)?.filter((c) => c.key !== key);
    if (!list || list.length === 0) this.byAddr.delete(addr);
    else this.byAddr.set(addr, list);
  }

  owner(addr: string): Claim | undefined {
    const list = this.byAddr.get(addr);
    if (!list) return undefined;
    let best = list[0];
    for (const c of list) if (best && older(c, best)) best = c;
    return best;
  }

  claimants(addr: string): readonly Claim[] {
    return this.byAddr.get(addr) ?? [];
  }
}
