/**
 * The Kubernetes API as an ObjectSource: one informer per kind the controller consumes
 * (Namespaces, Nodes, Pods, Services, ServiceAccounts, EndpointSlices, HTTPRoute, GRPCRoute
 * and skein's policy CRDs), all feeding the controller's ObjectStore.
 */
import type { Logger } from '../../telemetry/log.js';
import type { ObjectSource } from '../controller.js';
import { KINDS, type KindInfo } from '../kinds.js';
import type { ObjectStore } from '../object-store.js';
import type { KubeClient } from './client.js';
import { Informer, type InformerOptions, type InformerStats } from './informer.js';

export interface KubeSourceOptions extends InformerOptions {
  client: KubeClient;
  /** Kinds to watch; default all of KINDS. */
  kinds?: KindInfo[];
  logger?: Logger;
}

export class KubeSource implements ObjectSource {
  readonly informers: Informer[];

  constructor(store: ObjectStore, opts: KubeSourceOptions) {
    this.informers = (opts.kinds ?? KINDS).map((k) => new Informer(opts.client, k, store, opts));
  }

  /** Resolves once every kind was listed once (or failed its first list: it keeps retrying). */
  async start(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.start()));
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
  }

  stats(): Record<string, InformerStats> {
    return Object.fromEntries(this.informers.map((i) => [i.origin, { ...i.stats }]));
  }
}
